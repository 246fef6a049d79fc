// The extension's entry points other than the FFI handlers (lstm.cc, gru.cc): the sgemm and thread settings that
// jaxlstm/_src/kernels/native.py makes through ctypes, and an empty Python module.

#include <Python.h>  // only for PyInit__native below

#include <cstdint>

#include "runtime.h"

extern "C" {

// The cblas_sgemm the loops call (OpenBLAS's, from native.py); it must run single-threaded.
void jaxlstm_native_set_sgemm(void* fn) {
  jaxlstm_native::g_sgemm.store(reinterpret_cast<jaxlstm_native::SgemmFn>(fn), std::memory_order_release);
}

// 0: choose the number of tasks and threads per call (the default); n > 0: use min(n, H), whatever the size.
void jaxlstm_native_set_threads(int n) { jaxlstm_native::g_threads.store(n < 0 ? 0 : n, std::memory_order_relaxed); }

// The number of tasks (and threads at most) a layer of batch B, H hidden units and G gates runs on.
int jaxlstm_native_threads(int64_t B, int64_t H, int64_t G) { return jaxlstm_native::choose_threads(B, H, G); }

}  // extern "C"

// A Python module of no content, so that importing jaxlstm._src.native._native (as module discovery does) works; the
// library is used through ctypes and the FFI targets.
static PyModuleDef native_module = {PyModuleDef_HEAD_INIT, "_native", nullptr, -1, nullptr, nullptr, nullptr, nullptr,
                                    nullptr};
PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&native_module); }
