r"""The native CPU LSTM layer: the fused kernel's two time loops in C++, called through :mod:`jax.ffi`.

:mod:`~jaxlstm.kernels.fused` organizes an LSTM layer for XLA: one input GEMM
before the loop, a lean recurrence, and a hand-written backward pass whose
loop carries only ``(dh, dc)``. On XLA's CPU backend each step of those loops
still pays microseconds for every fusion, small GEMM and thread hand-off. This
kernel keeps the same organization and runs the two loops in native code
(``jaxlstm/_src/native/lstm.cc``):

* :func:`native_forward`: the input projection ``xs @ w_x`` and the
  recurrence; with ``save`` it also writes the backward factors ``P, Q, F``
  of :mod:`~jaxlstm.kernels.fused`.
* :func:`native_backward`: the ``(dh, dc)`` recursion, emitting ``dz``, the
  gradient of the gate pre-activations (over ``P``, in place).

The weight-gradient GEMMs (``dW_h, dW_x, dxs, db``) stay in XLA, as big GEMMs
over all ``T * B`` rows. The hidden units are split into tasks, one per core;
a task owns its units' columns of all four gates, so a step hands off between
threads once, and a step's ``(B, H) x (H, 4H)`` GEMM is OpenBLAS's sgemm (from
the ``scipy-openblas32`` wheel) on the task's slice, with its columns of
``w_h`` packed once per call and hot in that core's cache. The threads claim
the tasks' steps instead of meeting at a barrier, so a thread that the OS has
not scheduled slows the loop to the threads that run rather than stalling each
step. The input projection runs inside the forward call, a chunk of steps at a
time, by each task for its own columns: right after one of XLA's
multi-threaded GEMMs in the same executable, XLA's threads hold the cores for a
while, and the loop's first steps would wait on them.

Projected layers (``proj_size``, without peepholes) run :func:`native_proj_forward` and
:func:`native_proj_backward`: a step is two phases, the gates split over hidden
units and then the projection ``h = y @ w_p`` split over its columns, each
a GEMM per task and one hand-off; their tangent is
:mod:`~jaxlstm.kernels.fused_norm`'s.

It runs plain, peephole and projected LSTM layers in float32 on the CPU backend, with
``lengths``, ``mask`` and ``reverse`` (the shell reverses); not ``resets`` or
``remat``, and not where the library was not built (no C++17 compiler at
install time) or cannot load: :func:`why_not` then says why, and
``impl="auto"`` picks the fused kernel instead. ``impl="auto"`` picks this
kernel for plain and projected float32 LSTMs (:func:`auto_skip`). Both loops
run natively at every size; ``TRAIN_MIN_HIDDEN`` (0) is the width below which a
plain layer would run only its forward loop natively and, differentiated, the
fused kernel's XLA loops (the same mathematics and factors), for benchmarks.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os

import jax
import jax.numpy as jnp

from jaxlstm._src.cells.lstm import LSTMParams, LSTMState
from jaxlstm._src.kernels import fused, fused_norm
from jaxlstm._src.kernels.registry import Kernel, LayerCall

_LIBRARY = "jaxlstm._src.native._native"  # the extension that setup.py builds (no Python module inside: a plain DSO)
_TARGETS = ("jaxlstm_lstm_forward_infer", "jaxlstm_lstm_forward_train", "jaxlstm_lstm_backward")
GRU_TARGETS = ("jaxlstm_gru_forward_infer", "jaxlstm_gru_forward_train", "jaxlstm_gru_backward")  # native_gru.py's
PROJ_TARGETS = ("jaxlstm_lstm_proj_forward_infer", "jaxlstm_lstm_proj_forward_train", "jaxlstm_lstm_proj_backward")


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
  """``(library, None)`` once the library is loaded and its FFI targets registered, or ``(None, why not)``."""
  spec = importlib.util.find_spec(_LIBRARY)
  if spec is None or spec.origin is None:
    return None, (
      "the native library is not built (no jaxlstm/_src/native/_native*.so; `pip install` builds it where a C++17 "
      "compiler works, see its log)"
    )
  try:
    import scipy_openblas32
  except ImportError as e:
    return None, f"the native library needs the scipy-openblas32 package for its GEMMs ({e})"
  try:
    lib = ctypes.CDLL(spec.origin)
    blas_name = scipy_openblas32.get_library()  # "scipy_openblas": its symbols are prefixed "scipy_"
    blas = ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), f"lib{blas_name}.so"))
    prefix = blas_name[: -len("openblas")]
    # The library's tasks each call sgemm on their own slice, so OpenBLAS must not start threads of its own.
    # This is the scipy-openblas32 wheel's own copy of OpenBLAS, not NumPy's or SciPy's.
    getattr(blas, f"{prefix}openblas_set_num_threads")(1)
    lib.jaxlstm_native_set_sgemm(ctypes.cast(getattr(blas, f"{prefix}cblas_sgemm"), ctypes.c_void_p))
    lib.jaxlstm_native_set_threads.argtypes = [ctypes.c_int]
    lib.jaxlstm_native_threads.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]
    lib.jaxlstm_native_set_panels.argtypes = [ctypes.c_int]
    lib.jaxlstm_native_set_huge_pages.argtypes = [ctypes.c_int]
    for name in _TARGETS + PROJ_TARGETS + GRU_TARGETS:
      jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
  except Exception as e:  # a library built for another ABI, a missing symbol, a JAX without jax.ffi
    return None, f"the native library does not load: {type(e).__name__}: {e}"
  return lib, None


def load_error() -> str | None:
  """Why the native library cannot run here, or ``None`` once it is loaded.

  Example:
    >>> from jaxlstm.kernels import native
    >>> native.load_error() is None or native.load_error().startswith("the native library")
    True
  """
  return _load()[1]


def _loaded() -> ctypes.CDLL:
  """The native library, for the setters; raises ``RuntimeError`` with the reason where it cannot run here."""
  lib, why = _load()
  if lib is None:
    raise RuntimeError(why)
  return lib


def set_threads(n: int) -> None:
  """Sets the number of tasks (one thread each) of the native loops: ``0`` (the default) picks per call,
  ``n > 0`` uses ``min(n, H)``. The environment variable ``JAXLSTM_NATIVE_THREADS`` caps the automatic choice.

  Raises:
    RuntimeError: the native library cannot run here (with the reason).
  """
  lib = _loaded()
  lib.jaxlstm_native_set_threads(int(n))


def set_panels(mode: int) -> int:
  """Chooses the per-step GEMM on the recurrent weights (``jaxlstm/_src/native/panels.h``) for the calls made
  after it, and returns the previous mode: ``1`` (the default) packs each task's weights once per call into panels
  for an AVX2 kernel where the CPU has AVX2 and FMA and no AVX-512F, and calls OpenBLAS's sgemm elsewhere; ``0``
  calls sgemm everywhere; ``2`` runs the panel kernel on any CPU with AVX2 and FMA. For tests and benchmarks: the
  result is the same up to float32 rounding.

  Raises:
    RuntimeError: the native library cannot run here (with the reason).
    ValueError: ``mode`` is not 0, 1 or 2.
  """
  lib = _loaded()
  if mode not in (0, 1, 2):
    raise ValueError(f"set_panels: mode must be 0, 1 or 2, got {mode!r}")
  return int(lib.jaxlstm_native_set_panels(int(mode)))


def set_huge_pages(on: bool) -> bool:
  """Whether the native calls made after it ask Linux for transparent huge pages for their large results, and
  the previous setting. On (the default; ``JAXLSTM_NATIVE_HUGE_PAGES=0`` turns it off for a process), each call
  advises (``madvise(MADV_HUGEPAGE)``) the 2 MiB-aligned interior of every result of 4 MiB or more before writing
  it: XLA maps a large jitted step's buffers afresh on each call, and a 4 KiB page faults on its first write
  (about 2 us each on the machines measured), where a huge page faults once for 512 of them. Only those buffers
  are advised; the rest of the process is left as it is. For benchmarks: the results are the same either way.

  Raises:
    RuntimeError: the native library cannot run here (with the reason).
  """
  lib = _loaded()
  return bool(lib.jaxlstm_native_set_huge_pages(1 if on else 0))


def panels() -> bool:
  """Whether the native calls made now run the panel kernel (``set_panels``); ``False`` without the library."""
  lib = _load()[0]
  return lib is not None and bool(lib.jaxlstm_native_panels())


def threads(batch: int, hidden: int, gates: int = 4) -> int:
  """How many tasks, and threads at most, a layer of ``batch`` rows, ``hidden`` units and ``gates`` gate blocks
  (4 for the LSTM, 3 for the GRU) runs on (1 without the library)."""
  lib = _load()[0]
  return 1 if lib is None else int(lib.jaxlstm_native_threads(batch, hidden, gates))


def optional_operand(a, dtype):
  """``a``, or an empty array where it is ``None``: the FFI handlers take a fixed list of operands, so an absent
  peephole or validity is an empty array."""
  return jnp.zeros((0,), dtype) if a is None else a


def native_forward(xs, w_x, b, w_h, peep, valid, h0, c0, *, save: bool):
  """The forward loop of one layer, in native code, its input projection included.

  Args:
    xs: the inputs ``(T, B, I)`` float32, time-major, in processing order.
    w_x: the input weights ``(I, 4H)``; gates ``i, f, g, o``.
    b: the bias ``(4H,)``.
    w_h: the recurrent weights ``(H, 4H)``.
    peep: the peephole weights ``(3, H)`` (``i, f, o``) or ``None``.
    valid: ``(T, B)`` bool or ``None``; an invalid step leaves the state as it was.
    h0, c0: the initial state ``(B, H)``.
    save: also return the backward pass's factors.

  Returns:
    ``(hs, h_T, c_T)``, with ``hs (T, B, H)`` the carried ``h`` (frozen where invalid); with ``save`` also
    ``P (T, B, 4H)``, ``Q, F (T, B, H)`` as :mod:`~jaxlstm.kernels.fused` defines them, and ``cs (T, B, H)``,
    the carried ``c``, for the peephole gradient (``(0,)`` without peepholes).

  Example:
    >>> from jaxlstm.kernels import native, reference
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> xs, state0 = jnp.ones((7, 2, 3)), jaxlstm.zero_state(params, (2,))
    >>> if native.load_error() is None:
    ...   hs, h, c = native.native_forward(xs, params.w_x, params.b, params.w_h, None, None, state0.h, state0.c,
    ...                                    save=False)
    ... else:  # no library here: the reference kernel stands in for the example
    ...   (h, c), hs = reference.run(params, xs, state0, None, None)
    >>> hs.shape, bool(jnp.allclose(hs, reference.run(params, xs, state0, None, None)[1], atol=1e-6))
    ((7, 2, 5), True)
  """
  T, B, _ = xs.shape
  H4 = w_x.shape[-1]
  H = H4 // 4
  f32 = jnp.float32
  args = (xs, w_x, b, w_h, optional_operand(peep, f32), optional_operand(valid, jnp.bool_), h0, c0)
  sds = jax.ShapeDtypeStruct
  outs = [sds((T, B, H), f32), sds((B, H), f32), sds((B, H), f32)]
  # vmap runs one call per example: the weights may differ between examples, which the handlers do not batch.
  if not save:
    return tuple(jax.ffi.ffi_call(_TARGETS[0], outs, vmap_method="sequential")(*args))
  outs += [
    sds((T, B, H4), f32),
    sds((T, B, H), f32),
    sds((T, B, H), f32),
    sds((T, B, H) if peep is not None else (0,), f32),
  ]
  return tuple(jax.ffi.ffi_call(_TARGETS[1], outs, vmap_method="sequential")(*args))


def native_backward(w_h, P, Q, F, valid, d_hs, d_hT, d_cT):
  """The backward loop of one layer, in native code: the ``(dh, dc)`` recursion of :mod:`~jaxlstm.kernels.fused`.

  Per step, from the last: ``dh += d_hs[t]; dc += dh * Q[t]; dz[t] = P[t] * [dc, dc, dc, dh];
  dh = dz[t] @ w_h.T; dc = dc * F[t]``; an invalid step passes ``(dh, dc)`` through and has ``dz[t] = 0``.

  Args:
    w_h: the recurrent weights ``(H, 4H)``.
    P, Q, F: the factors from :func:`native_forward` with ``save``.
    valid: ``(T, B)`` bool or ``None``.
    d_hs: the gradient reaching ``hs``, ``(T, B, H)``.
    d_hT, d_cT: the gradients reaching the final state ``(B, H)``.

  Returns:
    ``(dz (T, B, 4H), dh0, dc0)``; ``dz`` takes ``P``'s buffer where XLA can donate it.
  """
  T, B, H4 = P.shape
  H = H4 // 4
  f32 = jnp.float32
  sds = jax.ShapeDtypeStruct
  outs = [sds((T, B, H4), f32), sds((B, H), f32), sds((B, H), f32)]
  call = jax.ffi.ffi_call(_TARGETS[2], outs, vmap_method="sequential", input_output_aliases={1: 0})
  return tuple(call(w_h, P, Q, F, optional_operand(valid, jnp.bool_), d_hs, d_hT, d_cT))


def native_proj_forward(xs, w_x, b, w_h, w_p, valid, h0, c0, *, save: bool):
  """The forward loop of one projected LSTM layer (``proj_size``, no layer norm or peepholes), in native code.

  Per step: ``z = X_t + h_{t-1} @ w_h``, the gates and ``c`` as in the plain layer, ``y = o * tanh(c)`` and
  ``h = y @ w_p``; an invalid step leaves ``(h, c)`` as they were.

  Args:
    xs: the inputs ``(T, B, I)`` float32, time-major, in processing order.
    w_x: the input weights ``(I, 4H)``; gates ``i, f, g, o``.
    b: the bias ``(4H,)``.
    w_h: the recurrent weights ``(P, 4H)``.
    w_p: the projection ``(H, P)``.
    valid: ``(T, B)`` bool or ``None``.
    h0: ``(B, P)``; c0: ``(B, H)``.
    save: also return the backward pass's factors.

  Returns:
    ``(hs (T, B, P), h_T (B, P), c_T (B, H))``; with ``save`` also the factors of
    :mod:`~jaxlstm.kernels.fused_norm`, ``P (T, B, 4H)``, ``F, R (T, B, H)``, and ``y (T, B, H)``, all zero at
    invalid steps.
  """
  T, B, _ = xs.shape
  H, Pd = w_p.shape
  f32 = jnp.float32
  args = (xs, w_x, b, w_h, w_p, optional_operand(valid, jnp.bool_), h0, c0)
  sds = jax.ShapeDtypeStruct
  outs = [sds((T, B, Pd), f32), sds((B, Pd), f32), sds((B, H), f32)]
  if not save:
    return tuple(jax.ffi.ffi_call(PROJ_TARGETS[0], outs, vmap_method="sequential")(*args))
  outs += [sds((T, B, 4 * H), f32)] + [sds((T, B, H), f32)] * 3
  return tuple(jax.ffi.ffi_call(PROJ_TARGETS[1], outs, vmap_method="sequential")(*args))


def native_proj_backward(w_h, w_p, P, F, R, valid, d_hs, d_hT, d_cT):
  """The backward loop of one projected LSTM layer, in native code: :mod:`~jaxlstm.kernels.fused_norm`'s
  without layer norm or peepholes.

  Per step, from the last: ``g = d_hs[t] + dz[t + 1] @ w_h.T`` (the gradient reaching ``h_t``), ``gy = g @ w_p.T``,
  ``dc += R[t] * gy; dz[t] = P[t] * [dc, dc, dc, gy]; dc = dc * F[t]``; an invalid step passes ``(g, dc)``
  through and has ``dz[t] = 0`` and ``G[t] = 0``.

  Args:
    w_h: ``(P, 4H)``; w_p: ``(H, P)``.
    P, F, R: the factors from :func:`native_proj_forward` with ``save``.
    valid: ``(T, B)`` bool or ``None``.
    d_hs: the gradient reaching ``hs``, ``(T, B, P)``.
    d_hT: ``(B, P)``; d_cT: ``(B, H)``.

  Returns:
    ``(dz (T, B, 4H), G (T, B, P), dh0 (B, P), dc0 (B, H))``: ``G[t]`` is ``g`` at valid steps, the gradient
    of the projection's output; ``dz`` takes ``P``'s buffer where XLA can donate it.
  """
  T, B, H4 = P.shape
  H, Pd = w_p.shape
  f32 = jnp.float32
  sds = jax.ShapeDtypeStruct
  outs = [sds((T, B, H4), f32), sds((T, B, Pd), f32), sds((B, Pd), f32), sds((B, H), f32)]
  call = jax.ffi.ffi_call(PROJ_TARGETS[2], outs, vmap_method="sequential", input_output_aliases={2: 0})
  return tuple(call(w_h, w_p, P, F, R, optional_operand(valid, jnp.bool_), d_hs, d_hT, d_cT))


def _loop(w_x, b, w_h, peep, xs, valid, h0, c0):
  return native_forward(xs, w_x, b, w_h, peep, valid, h0, c0, save=False)


def _loop_saved(w_x, b, w_h, peep, xs, valid, h0, c0):
  hs, h, c, P, Q, F, cs = native_forward(xs, w_x, b, w_h, peep, valid, h0, c0, save=True)
  return (h, c), (P, Q, F, hs, cs if peep is not None else None)


# (hs (T, B, H), h_T, c_T) of the layer on time-major xs (T, B, I): the native loops, with the fused kernel's
# tangent, so that reverse mode runs native_backward and forward mode (jvp, jacfwd, hessian) works too.
_layer = fused.kernel_layer("lstm_native_tangent", _loop, _loop_saved, native_backward)
# The same with only the forward loop native: differentiated, it runs the fused kernel's XLA loops.
_layer_forward_only = fused.kernel_layer("lstm_native_forward_tangent", _loop, None, None)


def _proj_loop(xs, w_x, b, w_h, w_p, valid, h0, c0):
  return native_proj_forward(xs, w_x, b, w_h, w_p, valid, h0, c0, save=False)


def _proj_loop_saved(xs, w_x, b, w_h, w_p, valid, h0, c0):
  hs, h, c, P, F, R, y = native_proj_forward(xs, w_x, b, w_h, w_p, valid, h0, c0, save=True)
  return (h, c), {"P": P, "F": F, "R": R, "hs": hs, "y": y}


# The projected layer (proj_size): the native loops, with fused_norm's tangent.
_proj_layer = fused_norm.kernel_layer("lstm_native_proj_tangent", _proj_loop, _proj_loop_saved, native_proj_backward)

# From this many hidden units on, training runs the native loops too; below, the fused kernel's XLA loops. Every
# width trains natively since the handlers advise huge pages for their results (runtime.h): bench/native.py
# --train-min-hidden 0 (both kernels in one process; fused time over native) on S (H=128) training at commit
# 4dbe440: 1.09-1.10 with the advice, 0.96-1.00 without it (JAXLSTM_NATIVE_HUGE_PAGES=0); 2-layer stacks of
# T=100 at H=32 (B=16, 128) and H=64 (B=32): 1.14-1.37. Before the advice (commit 6a7279d) S measured 0.84-1.07 and
# the threshold was 256.
TRAIN_MIN_HIDDEN = 0


def _trains_natively(params: LSTMParams) -> bool:
  """Projected layers always do: their XLA loops pay for two GEMMs a step, and the native ones measured faster
  at every size of the benchmark (bench/native.py --cell proj)."""
  return params.w_proj is not None or params.w_h.shape[0] >= TRAIN_MIN_HIDDEN


def why_not(call: LayerCall) -> str | None:
  """Why the native kernel cannot run ``call``, or ``None``.

  It runs float32 plain, peephole and projected (without peepholes) LSTMs on JAX's CPU backend, with
  ``lengths``, ``mask`` and ``reverse``; not ``resets`` or ``remat``, and not
  where its library is not built or does not load.

  Example:
    >>> from jaxlstm.kernels import native
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5, dtype=jnp.bfloat16)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("lstm"), params=params, lengths=True, mask=False,
    ...                          resets=False, reverse=True, time_major=False, remat=None)
    >>> native.why_not(call)
    "it runs float32 params only; got bfloat16; use impl='fused'"
  """
  if call.cell.name != "lstm":
    return f"it runs LSTM layers only, not {call.cell.name}"
  p = call.params
  if p.layer_norm is not None:
    return "it runs plain, peephole and projected LSTMs, not layer_norm; use impl='fused'"
  if p.w_proj is not None and p.peephole is not None:
    return "it runs projected LSTMs without peepholes only; use impl='fused'"
  return why_not_native(call, "fused")


def why_not_native(call: LayerCall, fused_impl: str) -> str | None:
  """What every native kernel (LSTM and GRU) refuses, past its cell's own checks, naming ``fused_impl`` as the
  kernel that takes the call instead: resets, remat, params other than float32, a backend other than the CPU,
  and a library that is not built or does not load."""
  if call.resets:
    return f"it does not take resets; use impl={fused_impl!r}"
  if call.remat is not None:
    return f"it keeps every step's factors, so it takes no remat; use impl={fused_impl!r}"
  dtype = call.params.w_x.dtype
  if dtype != jnp.float32:
    return f"it runs float32 params only; got {dtype}; use impl={fused_impl!r}"
  if jax.default_backend() != "cpu":
    return f"it runs on the CPU backend only; JAX's default backend is {jax.default_backend()!r}"
  return load_error()


def auto_skip(call: LayerCall) -> str | None:
  """Why ``impl="auto"`` keeps a layer that this kernel can run on the fused kernel instead, or ``None``.

  Example:
    >>> from jaxlstm.kernels import native
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 128)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("lstm"), params=params, lengths=False, mask=False,
    ...                          resets=False, reverse=False, time_major=False, remat=None)
    >>> native.auto_skip(call) is None
    True
    >>> native.auto_skip(call._replace(params=jaxlstm.lstm_init(jax.random.key(0), 3, 128, peephole=True)))
    "its peephole path is not measured against the fused kernel's"
  """
  if call.params.peephole is not None:
    return "its peephole path is not measured against the fused kernel's"
  return None


def run(
  params: LSTMParams,
  xs: jax.Array,
  state: LSTMState,
  valid,
  resets=None,
  *,
  lengths=None,
  unroll=None,
  remat=None,
) -> tuple[LSTMState, jax.Array]:
  """The kernel's core: one LSTM layer on time-major ``xs (T, B, I)``, state leaves ``(B, H)``.

  Args:
    params: float32 :class:`~jaxlstm.LSTMParams` without layer norm, and without peepholes where projected.
    xs: inputs ``(T, B, I)`` in processing order.
    state: :class:`~jaxlstm.LSTMState` with leaves ``(B, H)``.
    valid: ``(T, B)`` bool validity, or ``None``.
    resets, remat: must be ``None`` (see :func:`why_not`).
    lengths: unused; validity arrives in ``valid``.
    unroll: unused: the loops are native.

  Returns:
    ``(final_state, hs)``; ``hs (T, B, H)`` float32, the carried ``h``, which the shell zeroes at invalid steps.

  Example:
    The core on time-major inputs, held to the reference kernel, its oracle:

    >>> from jaxlstm.kernels import native, reference
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5, peephole=True)
    >>> xs, state0 = jnp.ones((7, 2, 3)), jaxlstm.zero_state(params, (2,))
    >>> core = native.run if native.load_error() is None else reference.run  # the reference where not built
    >>> state, hs = core(params, xs, state0, None)
    >>> hs.shape, state.c.shape
    ((7, 2, 5), (2, 5))
    >>> bool(jnp.allclose(hs, reference.run(params, xs, state0, None, None)[1], atol=1e-6))
    True
  """
  del lengths, resets, unroll, remat
  f32 = jnp.float32
  if params.w_proj is not None:
    hs, h, c = _proj_layer(
      xs.astype(f32), params.w_x, params.b, params.w_h, params.w_proj, valid, state.h.astype(f32), state.c.astype(f32)
    )
    return LSTMState(h, c), hs
  layer = _layer if _trains_natively(params) else _layer_forward_only
  hs, h, c = layer(
    params.w_x, params.b, params.w_h, params.peephole, xs.astype(f32), valid, state.h.astype(f32), state.c.astype(f32)
  )
  return LSTMState(h, c), hs


def note(call: LayerCall) -> str | None:
  """How this kernel runs ``call``: below ``TRAIN_MIN_HIDDEN`` units (0, none, by default), training runs the
  fused kernel's loops; ``None`` where both loops are native.

  :func:`jaxlstm.explain` shows it beside "chosen".

  Example:
    >>> from jaxlstm.kernels import native
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("lstm"), params=jaxlstm.lstm_init(jax.random.key(0), 3, 5),
    ...                          lengths=False, mask=False, resets=False, reverse=False, time_major=False, remat=None)
    >>> native.note(call) is None  # both loops native at every size
    True
  """
  if _trains_natively(call.params):
    return None
  H = call.params.w_h.shape[-1] // 4
  return f"the forward loop; trained, below {TRAIN_MIN_HIDDEN} hidden units (H={H}), the fused kernel's XLA loops"


# Ranked before the fused kernel, which auto takes wherever auto_skip says so.
KERNEL = Kernel(name="native", why_not=why_not, run=run, rank=9, auto_skip=auto_skip, note=note)
