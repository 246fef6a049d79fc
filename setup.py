"""The native CPU LSTM and GRU kernels, an optional C++ extension; everything else about the build is in pyproject.toml.

``jaxlstm/_src/native/lstm.cc`` and ``gru.cc`` hold XLA FFI handlers, loaded with ctypes by
``jaxlstm/_src/kernels/native.py`` (it has no Python module inside). The build
needs only a C++17 compiler: the XLA FFI headers are vendored beside it, and
OpenBLAS is found at run time. Where it does not compile (no compiler, another
OS), the extension is skipped and jaxlstm installs without it: the XLA kernels
run everywhere, and ``jaxlstm.explain`` says why the native one does not.
"""

import sys

from setuptools import Extension, setup

# -O3 vectorizes the gate loops; the file compiles them for AVX-512, AVX2 and baseline x86-64 itself
# (target_clones), so no -march flag: a wheel built here must run on older CPUs. -fno-math-errno and
# -fno-trapping-math let the selects and divisions of the loops vectorize; nothing there reads errno or FP traps.
FLAGS = ["-std=c++17", "-O3", "-fno-math-errno", "-fno-trapping-math", "-isystem", "jaxlstm/_src/native/include"]

ext_modules = []
if sys.platform.startswith("linux"):
  ext_modules.append(
    Extension(
      "jaxlstm._src.native._native",
      sources=[f"jaxlstm/_src/native/{name}.cc" for name in ("module", "lstm", "gru")],
      depends=[
        "jaxlstm/_src/native/runtime.h",
        "jaxlstm/_src/native/panels.h",
        "jaxlstm/_src/native/include/xla/ffi/api/ffi.h",
      ],
      language="c++",
      extra_compile_args=FLAGS,
      extra_link_args=["-pthread"],
      optional=True,  # a failed compile skips the native kernel instead of failing the install
    )
  )

setup(ext_modules=ext_modules)
