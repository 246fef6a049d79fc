// The extension's entry points other than the FFI handlers (lstm.cc, gru.cc): the sgemm and thread settings that
// jaxlstm/_src/kernels/native.py makes through ctypes, and an empty Python module.

#include <Python.h>  // only for PyInit__native below

#include <cstdint>

#include "panels.h"
#include "runtime.h"

extern "C" {

// The cblas_sgemm the loops call (OpenBLAS's, from native.py); it must run single-threaded.
void jaxlstm_native_set_sgemm(void* fn) {
  jaxlstm_native::g_sgemm.store(reinterpret_cast<jaxlstm_native::SgemmFn>(fn), std::memory_order_release);
}

// 0: choose the number of tasks and threads per call (the default); n > 0: use min(n, H), whatever the size.
void jaxlstm_native_set_threads(int n) { jaxlstm_native::g_threads.store(n < 0 ? 0 : n, std::memory_order_relaxed); }

// The per-step GEMMs on the recurrent weights (panels.h): 0, OpenBLAS's sgemm; 1, the panel kernel where the CPU has
// AVX2 and FMA and no AVX-512F (the default); 2, the panel kernel on any CPU with AVX2 and FMA. Returns the old mode.
int jaxlstm_native_set_panels(int mode) { return jaxlstm_native::g_panels.exchange(mode < 0 || mode > 2 ? 1 : mode); }

// Whether the calls made now run the panel kernel.
int jaxlstm_native_panels() { return jaxlstm_native::panels_here() ? 1 : 0; }

// Whether the calls made now advise huge pages for their large results (runtime.h's advise_huge_pages): 1 (the
// default, or the environment's JAXLSTM_NATIVE_HUGE_PAGES) or 0. Returns the old setting.
int jaxlstm_native_set_huge_pages(int on) { return jaxlstm_native::g_huge_pages.exchange(on != 0) ? 1 : 0; }

// The number of tasks (and threads at most) a layer of batch B, H hidden units and G gates runs on.
int jaxlstm_native_threads(int64_t B, int64_t H, int64_t G) { return jaxlstm_native::choose_threads(B, H, G); }

}  // extern "C"

// A Python module of no content, so that importing jaxlstm._src.native._native (as module discovery does) works; the
// library is used through ctypes and the FFI targets.
static PyModuleDef native_module = {PyModuleDef_HEAD_INIT, "_native", nullptr, -1, nullptr, nullptr, nullptr, nullptr,
                                    nullptr};
PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&native_module); }
