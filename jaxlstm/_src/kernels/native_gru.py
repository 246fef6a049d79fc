r"""The native CPU GRU layer: the fused GRU kernel's two time loops in C++, called through :mod:`jax.ffi`.

:mod:`~jaxlstm.kernels.fused_gru` organizes a GRU layer (PyTorch's semantics)
for XLA: one input GEMM before the loop, one recurrent GEMM per step, and a
hand-written backward pass whose loop carries only ``dh``. This kernel keeps
that organization and runs its two loops in native code
(``jaxlstm/_src/native/gru.cc``), on the runtime of the native LSTM kernel
(:mod:`~jaxlstm.kernels.native`: the library's own threads, each task owning
the ``r, z, n`` columns of its hidden units, OpenBLAS's sgemm per step):

* :func:`native_gru_forward`: the input projection ``xs @ w_x`` and the
  recurrence; with ``save`` also the backward factors ``F3 = [P_r, P_z, Q]``,
  ``P_n`` and ``Z`` of :mod:`~jaxlstm.kernels.fused_gru`.
* :func:`native_gru_backward`: the ``dh`` recursion, emitting ``g`` and
  ``g_n``, the gradients of ``h W_h + b`` and of the input side of ``n``
  (over ``F3`` and ``P_n``, in place).

The weight-gradient GEMMs stay in XLA, over all ``T * B`` rows, and forward
mode (``jvp``, ``jacfwd``, ``hessian``) runs the fused GRU kernel's tangent
(:func:`~jaxlstm.kernels.fused_gru.kernel_layer`).

It runs float32 GRU layers on the CPU backend, with ``lengths``, ``mask`` and
``reverse`` (the shell reverses); not ``resets`` or ``remat``, and not where
the native library was not built or cannot load: :func:`why_not` then says
why, and ``impl="auto"`` picks the fused GRU kernel instead. Both loops run
natively at every size; below ``TRAIN_MIN_HIDDEN`` units (0) only the forward
loop would, as in the native LSTM kernel, for benchmarks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlstm._src.cells.gru import GRUParams, GRUState
from jaxlstm._src.kernels import fused_gru
from jaxlstm._src.kernels.native import GRU_TARGETS, optional_operand, why_not_native
from jaxlstm._src.kernels.registry import Kernel, LayerCall


def native_gru_forward(xs, w_x, b, w_h, b_hn, valid, h0, *, save: bool):
  """The forward loop of one GRU layer, in native code, its input projection included.

  Args:
    xs: the inputs ``(T, B, I)`` float32, time-major, in processing order.
    w_x: the input weights ``(I, 3H)``; gates ``r, z, n``.
    b: the bias ``(3H,)``.
    w_h: the recurrent weights ``(H, 3H)``.
    b_hn: the candidate's recurrent bias ``(H,)``, inside the reset product.
    valid: ``(T, B)`` bool or ``None``; an invalid step leaves the state as it was.
    h0: the initial state ``(B, H)``.
    save: also return the backward pass's factors.

  Returns:
    ``(hs, h_T)``, with ``hs (T, B, H)`` the carried ``h`` (frozen where invalid); with ``save`` also
    ``F3 (T, B, 3H)``, ``P_n, Z (T, B, H)`` as :mod:`~jaxlstm.kernels.fused_gru` defines them.

  Example:
    >>> from jaxlstm.kernels import native, native_gru, reference
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> xs, state0 = jnp.ones((7, 2, 3)), jaxlstm.zero_state(params, (2,))
    >>> if native.load_error() is None:
    ...   hs, h = native_gru.native_gru_forward(xs, params.w_x, params.b, params.w_h, params.b_hn, None, state0.h,
    ...                                         save=False)
    ... else:  # no library here: the reference kernel stands in for the example
    ...   (h,), hs = reference.run(params, xs, state0, None, None)
    >>> hs.shape, bool(jnp.allclose(hs, reference.run(params, xs, state0, None, None)[1], atol=1e-6))
    ((7, 2, 5), True)
  """
  T, B, _ = xs.shape
  H = w_h.shape[0]
  f32 = jnp.float32
  args = (xs, w_x, b, w_h, b_hn, optional_operand(valid, jnp.bool_), h0)
  sds = jax.ShapeDtypeStruct
  outs = [sds((T, B, H), f32), sds((B, H), f32)]
  # vmap runs one call per example: the weights may differ between examples, which the handlers do not batch.
  if not save:
    return tuple(jax.ffi.ffi_call(GRU_TARGETS[0], outs, vmap_method="sequential")(*args))
  outs += [sds((T, B, 3 * H), f32), sds((T, B, H), f32), sds((T, B, H), f32)]
  return tuple(jax.ffi.ffi_call(GRU_TARGETS[1], outs, vmap_method="sequential")(*args))


def native_gru_backward(w_h, F3, P_n, Z, valid, d_hs, d_hT):
  """The backward loop of one GRU layer, in native code: the ``dh`` recursion of :mod:`~jaxlstm.kernels.fused_gru`.

  Per step, from the last: ``dh += d_hs[t]; g[t] = F3[t] * [dh, dh, dh]; g_n[t] = P_n[t] * dh;
  dh = g[t] @ w_h.T + Z[t] * dh``; an invalid step passes ``dh`` through and has ``g[t] = g_n[t] = 0``.

  Args:
    w_h: the recurrent weights ``(H, 3H)``.
    F3, P_n, Z: the factors from :func:`native_gru_forward` with ``save``.
    valid: ``(T, B)`` bool or ``None``.
    d_hs: the gradient reaching ``hs``, ``(T, B, H)``.
    d_hT: the gradient reaching the final state ``(B, H)``.

  Returns:
    ``(g (T, B, 3H), g_n (T, B, H), dh0)``; ``g`` and ``g_n`` take the buffers of ``F3`` and ``P_n`` where XLA
    can donate them.
  """
  T, B, H3 = F3.shape
  H = H3 // 3
  f32 = jnp.float32
  sds = jax.ShapeDtypeStruct
  outs = [sds((T, B, H3), f32), sds((T, B, H), f32), sds((B, H), f32)]
  call = jax.ffi.ffi_call(GRU_TARGETS[2], outs, vmap_method="sequential", input_output_aliases={1: 0, 2: 1})
  return tuple(call(w_h, F3, P_n, Z, optional_operand(valid, jnp.bool_), d_hs, d_hT))


def _loop(w_x, b, w_h, b_hn, xs, valid, h0):
  return native_gru_forward(xs, w_x, b, w_h, b_hn, valid, h0, save=False)


def _loop_saved(w_x, b, w_h, b_hn, xs, valid, h0):
  hs, h, F3, P_n, Z = native_gru_forward(xs, w_x, b, w_h, b_hn, valid, h0, save=True)
  return h, (F3, P_n, Z, hs)


# (hs (T, B, H), h_T) of the layer on time-major xs (T, B, I): the native loops, with the fused GRU kernel's
# tangent, so that reverse mode runs native_gru_backward and forward mode (jvp, jacfwd, hessian) works too.
_layer = fused_gru.kernel_layer("gru_native_tangent", _loop, _loop_saved, native_gru_backward)
# The same with only the forward loop native: differentiated, it runs the fused GRU kernel's XLA loops.
_layer_forward_only = fused_gru.kernel_layer("gru_native_forward_tangent", _loop, None, None)

# From this many hidden units on, training runs the native loops too; below, the fused GRU kernel's XLA loops.
# bench/native.py --cell gru --train-min-hidden 0 on S (H=128) training, with the huge-page advice (runtime.h):
# fused time over native 1.04-1.14 (0.99-1.14 without); 2-layer stacks of T=100 at H=32 and 64: 1.17-1.52. At
# commit 8c5cbe2, without the advice, S measured 0.97-0.98 and the threshold was 256. As the native LSTM kernel's.
TRAIN_MIN_HIDDEN = 0


def _trains_natively(params: GRUParams) -> bool:
  return params.w_h.shape[0] >= TRAIN_MIN_HIDDEN


def why_not(call: LayerCall) -> str | None:
  """Why the native GRU kernel cannot run ``call``, or ``None``.

  It runs float32 GRUs on JAX's CPU backend, with ``lengths``, ``mask`` and
  ``reverse``; not ``resets`` or ``remat``, and not where its library is not
  built or does not load.

  Example:
    >>> from jaxlstm.kernels import native_gru
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("gru"), params=jaxlstm.gru_init(jax.random.key(0), 3, 5),
    ...                          lengths=True, mask=False, resets=True, reverse=True, time_major=False, remat=None)
    >>> native_gru.why_not(call)
    "it does not take resets; use impl='fused_gru'"
    >>> native_gru.why_not(call._replace(cell=jaxlstm.get_cell("lstm")))
    'it runs GRU layers only, not lstm'
  """
  if call.cell.name != "gru":
    return f"it runs GRU layers only, not {call.cell.name}"
  return why_not_native(call, "fused_gru")


def run(
  params: GRUParams,
  xs: jax.Array,
  state: GRUState,
  valid,
  resets=None,
  *,
  lengths=None,
  unroll=None,
  remat=None,
) -> tuple[GRUState, jax.Array]:
  """The kernel's core: one GRU layer on time-major ``xs (T, B, I)``, state ``h (B, H)``.

  Args:
    params: float32 :class:`~jaxlstm.GRUParams`.
    xs: inputs ``(T, B, I)`` in processing order.
    state: :class:`~jaxlstm.GRUState` with ``h (B, H)``.
    valid: ``(T, B)`` bool validity, or ``None``.
    resets, remat: must be ``None`` (see :func:`why_not`).
    lengths: unused; validity arrives in ``valid``.
    unroll: unused: the loops are native.

  Returns:
    ``(final_state, hs)``; ``hs (T, B, H)`` float32, the carried ``h``, which the shell zeroes at invalid steps.

  Example:
    The core on time-major inputs, held to the reference kernel, its oracle:

    >>> from jaxlstm.kernels import native, native_gru, reference
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> xs, state0 = jnp.ones((7, 2, 3)), jaxlstm.zero_state(params, (2,))
    >>> core = native_gru.run if native.load_error() is None else reference.run  # where not built
    >>> state, hs = core(params, xs, state0, None)
    >>> hs.shape, state.h.shape
    ((7, 2, 5), (2, 5))
    >>> bool(jnp.allclose(hs, reference.run(params, xs, state0, None, None)[1], atol=1e-6))
    True
  """
  del lengths, resets, unroll, remat
  f32 = jnp.float32
  layer = _layer if _trains_natively(params) else _layer_forward_only
  hs, h = layer(params.w_x, params.b, params.w_h, params.b_hn, xs.astype(f32), valid, state.h.astype(f32))
  return GRUState(h), hs


def note(call: LayerCall) -> str | None:
  """How this kernel runs ``call``: below ``TRAIN_MIN_HIDDEN`` units (0, none, by default), training runs the
  fused GRU kernel's loops; ``None`` where both loops are native.

  Example:
    >>> from jaxlstm.kernels import native_gru
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("gru"), params=jaxlstm.gru_init(jax.random.key(0), 3, 5),
    ...                          lengths=False, mask=False, resets=False, reverse=False, time_major=False, remat=None)
    >>> native_gru.note(call) is None  # both loops native at every size
    True
  """
  if _trains_natively(call.params):
    return None
  H = call.params.w_h.shape[0]
  return f"the forward loop; trained, below {TRAIN_MIN_HIDDEN} hidden units (H={H}), the fused GRU kernel's XLA loops"


# Ranked before the fused GRU kernel, with the native LSTM kernel (the two never run the same cell).
KERNEL = Kernel(name="native_gru", why_not=why_not, run=run, rank=9, note=note)
