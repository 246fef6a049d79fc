r"""The Pallas LSTM layer for CUDA GPUs: the whole time loop in one kernel launch.

On a GPU, XLA runs :mod:`~jaxlstm.kernels.fused`'s loops as a few kernel
launches per step, per layer. At small batch and hidden sizes (the S config:
``B = 32``, ``H = 128``) every step is launch-bound: the recurrent GEMM of a
step is microseconds of work behind microseconds of launch and
synchronization. This kernel runs all ``T`` steps of a layer inside one
``pallas_call`` (through Triton), as Persistent RNNs (Diamos et al., 2016) and
FlashRNN (Pöppel et al., 2024) do:

* The grid splits the batch into blocks of :data:`BLOCK_B` rows. Each program
  owns one block for the whole sequence; its ``h`` and ``c`` never leave
  registers between steps, since the rows of a block depend on nothing
  outside it.
* Each step is four ``(BLOCK_B, H) x (H, H)`` tensor-core dots, one per gate,
  on the program's ``h``, and the cell update in registers. Where the
  recurrent weights are small enough (:func:`resident`), a program loads them
  once, before the loop, and they stay on-chip for all ``T`` steps; larger
  ones are re-read each step from L2.
* The organization of the arithmetic is the fused kernel's: the input GEMM
  ``xs @ w_x + b`` of all steps is one XLA GEMM before the launch; the
  training forward saves the backward factors ``P, Q, F`` of
  :mod:`~jaxlstm.kernels.fused`; the backward kernel runs the ``(dh, dc)``
  recursion in reverse, in one launch too, and writes ``dz``; the weight gradients are XLA GEMMs over all
  ``T * B`` rows after it. The layer is the same :func:`jax.custom_jvp` over a
  linear recurrence (:mod:`~jaxlstm._src.kernels.linear`) whose transpose is
  the backward kernel, so ``grad``, ``jvp``, ``jacfwd``, ``hessian`` and
  ``vmap`` all work; forward mode runs the fused kernel's XLA tangent loop.

Precision: the dots follow JAX's ``jax_default_matmul_precision``, as XLA's
own GEMMs do: TF32 inputs with float32 sums by default on a float32 layer,
full float32 under ``"highest"``; 16-bit params use 16-bit tensor-core inputs
with float32 sums, and the carry stays float32.

Triton needs power-of-two tile sides of at least 16, so a call pads the batch
to a multiple of :data:`BLOCK_B` and each gate's ``H`` units to a power of two
(zero weights: padded units stay exactly 0 and change nothing), and slices the
results back; shapes that are already aligned pay nothing.

It runs plain LSTM layers (no peephole, LayerNorm or projection) with
``lengths``, ``mask``, ``reverse`` and ``remat``, hidden sizes up to
:data:`MAX_HIDDEN`, on a CUDA backend. ``impl="auto"`` ranks it after the
fused kernel until GPU measurements say otherwise (``bench/gpu_session.sh``
times both). Without a GPU, :func:`interpret` runs the kernel's semantics on
the CPU (slowly: for tests), and ``jax.export`` lowers it for CUDA.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from jaxlstm._src.cells.lstm import LSTMParams, LSTMState
from jaxlstm._src.kernels import fused
from jaxlstm._src.kernels.chunks import project_steps, remat_chunks
from jaxlstm._src.kernels.registry import Kernel, LayerCall

BLOCK_B = 16  # batch rows per program: the smallest tensor-core tile side Triton takes
MAX_HIDDEN = 128  # one gate's (H, H) weight tile must fit a multiprocessor's shared memory: 64 KB in float32
RESIDENT_BYTES = 128 * 1024  # recurrent weights up to this size are loaded once per program, not once per step
# jax.export refuses custom calls without a compatibility guarantee unless told; Triton kernels are one.
EXPORT_CHECKS = (jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton"),)
_MODE = ["backend"]  # "backend": follow jax.default_backend(); "interpret"; "gpu" (lowering for export)


@contextlib.contextmanager
def _mode(mode: str) -> Iterator[None]:
  old = _MODE[0]
  _MODE[0] = mode
  try:
    yield
  finally:
    _MODE[0] = old


def interpret() -> contextlib.AbstractContextManager:
  """Within the block, the Pallas kernels run in interpret mode: their semantics on any backend, for tests.

  Interpret mode evaluates the kernel body with XLA on the current backend (the CPU here), step by step; it is
  exact but slow. The choice is read when a call is traced, so a function jitted inside the block keeps it.

  Example:
    >>> from jaxlstm.kernels import pallas
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> with pallas.interpret():
    ...   _, hs = jaxlstm.lstm(params, jnp.ones((2, 7, 3)), impl="pallas")
    >>> bool(jnp.allclose(hs, jaxlstm.lstm(params, jnp.ones((2, 7, 3)), impl="reference")[1], atol=1e-6))
    True
  """
  return _mode("interpret")


def for_gpu() -> contextlib.AbstractContextManager:
  """Within the block, calls select and lower the kernel for a CUDA GPU whatever the host's backend is.

  For :func:`jax.export` of a GPU program from a machine without one: the exported module holds the kernel's
  Triton code, for a CUDA host to compile and run.

  Example:
    >>> from jaxlstm.kernels import pallas
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 16)
    >>> f = jax.jit(lambda p, x: jaxlstm.lstm(p, x, impl="pallas")[1])
    >>> with pallas.for_gpu():
    ...   exported = jax.export.export(f, platforms=["cuda"], disabled_checks=pallas.EXPORT_CHECKS)(
    ...     params, jax.ShapeDtypeStruct((16, 8, 3), jnp.float32))
    >>> exported.platforms, "xla.gpu.triton" in exported.mlir_module()
    (('cuda',), True)
  """
  return _mode("gpu")


def why_not(call: LayerCall) -> str | None:
  """Why the Pallas kernel cannot run ``call``, or ``None``.

  Example:
    >>> from jaxlstm.kernels import pallas
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("lstm"), params=params, lengths=True, mask=False,
    ...                          resets=False, reverse=True, time_major=False, remat=None)
    >>> with pallas.interpret():
    ...   pallas.why_not(call) is None
    True
    >>> with pallas.interpret():
    ...   pallas.why_not(call._replace(params=jaxlstm.lstm_init(jax.random.key(0), 3, 200)))
    'its tiles hold hidden sizes up to 128; got 200 (impl="fused" runs any size)'
  """
  if call.cell.name != "lstm":
    return f"it runs LSTM layers only, not {call.cell.name}"
  params = call.params
  if params.peephole is not None or params.layer_norm is not None or params.w_proj is not None:
    return 'it runs plain LSTMs only (no peephole, layer_norm or proj_size); impl="fused" runs them all'
  if call.resets:
    return 'it takes lengths and masks but not resets; impl="fused" does'
  return runs_here(params.w_h.shape[0], params.w_x.dtype, "fused")


def runs_here(H: int, dtype, fallback: str) -> str | None:
  """Why the Pallas kernels cannot run a layer of ``H`` units in ``dtype`` here, or ``None``; ``fallback`` is
  the kernel a reason points to."""
  if H > MAX_HIDDEN:
    return f'its tiles hold hidden sizes up to {MAX_HIDDEN}; got {H} (impl="{fallback}" runs any size)'
  if _MODE[0] == "interpret":
    return None
  if _MODE[0] == "backend" and jax.default_backend() != "gpu":
    return (
      f"it compiles for CUDA GPUs (Pallas on Triton); JAX's default backend is {jax.default_backend()!r} "
      "(jaxlstm.kernels.pallas.interpret() runs its semantics on any backend, for tests)"
    )
  if dtype == jnp.float64:
    return "Triton's tensor cores take float32, bfloat16 and float16, not float64"
  return None


def pow2(n: int) -> int:
  """The tile side for ``n``: the next power of two, at least 16 (Triton's smallest tensor-core side)."""
  return max(16, 1 << (n - 1).bit_length())


def resident(H: int, dtype, gates: int = 4) -> bool:
  """Whether the kernels load a layer's recurrent weights ``(H, gates * H)`` once per program, not per step.

  Example:
    >>> from jaxlstm.kernels import pallas
    >>> pallas.resident(128, jnp.bfloat16), pallas.resident(128, jnp.float32)
    (True, False)
  """
  return pow2(H) * gates * pow2(H) * jnp.dtype(dtype).itemsize <= RESIDENT_BYTES


def dot(a, b, *, trans_b=False):
  """``a @ b`` (or ``a @ b.T``) in ``a``'s dtype, the carry's: float32 sums under 16-bit weights. The precision
  follows ``jax_default_matmul_precision``, as XLA's GEMMs do."""
  dims = (((1,), (1 if trans_b else 0,)), ((), ()))
  return lax.dot_general(a.astype(b.dtype), b, dims, preferred_element_type=a.dtype)


def gate_weights(w_ref, Hp: int, load_now: bool, gates: int = 4) -> list:
  """The ``(Hp, Hp)`` gate tiles of ``w_ref``: functions that return values loaded now, or load when called."""
  tiles = [functools.partial(lambda k: w_ref[:, pl.ds(k * Hp, Hp)], k) for k in range(gates)]
  if load_now:
    values = [t() for t in tiles]
    return [functools.partial(lambda v: v, v) for v in values]
  return tiles


def _forward_kernel(*refs, T: int, Hp: int, masked: bool, save: bool, keep: bool):
  """One program: ``T`` LSTM steps of one batch block; with ``save`` also the backward factors."""
  zx_ref, w_ref, *rest = refs
  v_ref = rest.pop(0) if masked else None
  h0_ref, c0_ref, hs_ref, hT_ref, cT_ref, *saved = rest
  w = gate_weights(w_ref, Hp, keep)
  gate = lambda t, k: zx_ref[t, :, pl.ds(k * Hp, Hp)].astype(hs_ref.dtype)  # noqa: E731

  def body(t, carry):
    h, c_prev = carry
    sig = lambda z: 0.5 * jnp.tanh(0.5 * z) + 0.5  # noqa: E731 (the fused kernel's form of the sigmoid)
    i = sig(gate(t, 0) + dot(h, w[0]()))
    f = sig(gate(t, 1) + dot(h, w[1]()))
    g = jnp.tanh(gate(t, 2) + dot(h, w[2]()))
    o = sig(gate(t, 3) + dot(h, w[3]()))
    c = f * c_prev + i * g
    tc = jnp.tanh(c)
    h_new = o * tc
    if save:
      # fused.py's backward factors. (Not written over zx in place, as the CPU kernels do: pallas_call has no
      # jvp with aliased buffers, which second-order autodiff needs, and fresh GPU memory costs no page faults.)
      P_ref, Q_ref, F_ref = saved
      for k, p in enumerate((g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), tc * o * (1 - o))):
        P_ref[t, :, pl.ds(k * Hp, Hp)] = p.astype(P_ref.dtype)
      Q_ref[t] = o * (1 - tc * tc)
      F_ref[t] = f
    if v_ref is not None:
      v = v_ref[t][:, None] > 0
      h_new, c = jnp.where(v, h_new, h), jnp.where(v, c, c_prev)
    hs_ref[t] = h_new
    return h_new, c

  h, c = lax.fori_loop(0, T, body, (h0_ref[...], c0_ref[...]))
  hT_ref[...] = h
  cT_ref[...] = c


def _backward_kernel(*refs, T: int, Hp: int, masked: bool, keep: bool):
  """One program: the ``(dh, dc)`` recursion of one batch block in reverse, writing ``dz`` over ``P``."""
  P_ref, Q_ref, F_ref, w_ref, *rest = refs
  v_ref = rest.pop(0) if masked else None
  dhs_ref, dhT_ref, dcT_ref, dz_ref, dh0_ref, dc0_ref = rest
  w = gate_weights(w_ref, Hp, keep)

  def body(k, carry):
    dh, dc = carry
    t = T - 1 - k
    dh = dh + dhs_ref[t]
    if v_ref is not None:
      v = v_ref[t][:, None] > 0
      dh_skip, dc_skip = jnp.where(v, 0.0, dh), jnp.where(v, 0.0, dc)
      dh, dc = jnp.where(v, dh, 0.0), jnp.where(v, dc, 0.0)
    dc = dc + dh * Q_ref[t]
    dh_prev = jnp.zeros_like(dh)
    for j, d in enumerate((dc, dc, dc, dh)):
      dz = P_ref[t, :, pl.ds(j * Hp, Hp)].astype(d.dtype) * d
      dz_ref[t, :, pl.ds(j * Hp, Hp)] = dz.astype(dz_ref.dtype)
      dh_prev = dh_prev + dot(dz, w[j](), trans_b=True)
    dc_prev = dc * F_ref[t]
    if v_ref is not None:
      dh_prev, dc_prev = dh_prev + dh_skip, dc_prev + dc_skip
    return dh_prev, dc_prev

  dh, dc = lax.fori_loop(0, T, body, (dhT_ref[...], dcT_ref[...]))
  dh0_ref[...] = dh
  dc0_ref[...] = dc


def block_specs(T: int, Hp: int, names: str, gates: int = 4) -> list:
  """Block specs over the batch grid, one per letter of ``names``: ``z`` a ``(T, Bb, gates * Hp)`` gate sequence,
  ``s`` a ``(T, Bb, Hp)`` sequence, ``w`` the whole ``(Hp, gates * Hp)`` weight, ``u`` a whole ``(Hp,)`` vector,
  ``v`` the ``(T, Bb)`` validity, ``b`` a ``(Bb, Hp)`` state."""
  out = []
  for n in names:
    if n == "z":
      out.append(pl.BlockSpec((T, BLOCK_B, gates * Hp), lambda b: (0, b, 0)))
    elif n == "s":
      out.append(pl.BlockSpec((T, BLOCK_B, Hp), lambda b: (0, b, 0)))
    elif n == "w":
      out.append(pl.BlockSpec((Hp, gates * Hp), lambda b: (0, 0)))
    elif n == "u":
      out.append(pl.BlockSpec((Hp,), lambda b: (0,)))
    elif n == "v":
      out.append(pl.BlockSpec((T, BLOCK_B), lambda b: (0, b)))
    else:
      out.append(pl.BlockSpec((BLOCK_B, Hp), lambda b: (b, 0)))
  return out


def launch(kernel, name: str, grid: int, in_specs, out_specs, out_shape):
  """``pallas_call`` of ``kernel`` on a 1-D grid with Triton's settings; interpreted inside :func:`interpret`."""
  from jax.experimental.pallas import triton as pltr

  return pl.pallas_call(
    kernel,
    grid=(grid,),
    in_specs=in_specs,
    out_specs=out_specs,
    out_shape=out_shape,
    interpret=_MODE[0] == "interpret",
    compiler_params=pltr.CompilerParams(num_warps=4, num_stages=1),
    name=name,
  )


def _forward(w_h, zx, valid, h0, c0, save: bool):
  """The forward kernel on padded ``zx (T, Bp, 4Hp)`` (bias included): ``((h, c), hs)``, and with ``save``
  ``((h, c), (P, Q, F, hs))``."""
  T, Bp, _ = zx.shape
  Hp = h0.shape[-1]
  masked = valid is not None
  keep = resident(Hp, w_h.dtype)
  sdt = h0.dtype
  ins = [zx, w_h] + ([valid.astype(sdt)] if masked else []) + [h0, c0]
  in_specs = block_specs(T, Hp, "zw" + ("v" if masked else "") + "bb")
  seq, state = jax.ShapeDtypeStruct((T, Bp, Hp), sdt), jax.ShapeDtypeStruct((Bp, Hp), sdt)
  out_shape, out_names = [seq, state, state], "sbb"
  if save:
    out_shape += [jax.ShapeDtypeStruct(zx.shape, zx.dtype), seq, seq]
    out_names += "zss"
  kernel = functools.partial(_forward_kernel, T=T, Hp=Hp, masked=masked, save=save, keep=keep)
  out_specs = block_specs(T, Hp, out_names)
  outs = launch(kernel, "jaxlstm_lstm_forward", Bp // BLOCK_B, in_specs, out_specs, out_shape)(*ins)
  hs, h, c = outs[:3]
  return ((h, c), tuple(outs[3:]) + (hs,)) if save else ((h, c), hs)


def _backward(w_h, P, Q, F, valid, d_hs, d_hT, d_cT):
  """The backward kernel on padded shapes: the transpose of :func:`jaxlstm.kernels.fused.tangent`, as one
  launch: ``(dz (T, Bp, 4Hp), dh0, dc0)``."""
  T, Bp, _ = P.shape
  Hp = d_hT.shape[-1]
  masked = valid is not None
  sdt = d_hT.dtype
  ins = [P, Q, F, w_h] + ([valid.astype(sdt)] if masked else []) + [d_hs, d_hT, d_cT]
  in_specs = block_specs(T, Hp, "zssw" + ("v" if masked else "") + "sbb")
  state = jax.ShapeDtypeStruct((Bp, Hp), sdt)
  out_shape = [jax.ShapeDtypeStruct(P.shape, P.dtype), state, state]
  kernel = functools.partial(_backward_kernel, T=T, Hp=Hp, masked=masked, keep=resident(Hp, w_h.dtype))
  out_specs = block_specs(T, Hp, "zbb")
  dz, dh0, dc0 = launch(kernel, "jaxlstm_lstm_backward", Bp // BLOCK_B, in_specs, out_specs, out_shape)(*ins)
  return dz, dh0, dc0


def input_projection(w_x, b, xs, sdt):
  """``xs @ w_x + b`` of all steps in one XLA GEMM, in the carry dtype ``sdt``: the kernels' ``zx``."""
  return project_steps(xs, w_x, sdt) + b.astype(sdt)


def pad_batch(xs, valid, states: tuple, Hp: int):
  """``xs (T, B, I)`` and ``valid`` padded to whole batch blocks, ``states`` (each ``(B, H)``) to ``(Bp, Hp)``.

  Padded rows compute on zeros and are sliced off after the launch; ``B = 0`` runs one block of padding.
  """
  B = xs.shape[1]
  Bp = max(1, -(-B // BLOCK_B)) * BLOCK_B
  if Bp != B:
    xs = jnp.pad(xs, ((0, 0), (0, Bp - B), (0, 0)))
    valid = None if valid is None else jnp.pad(valid, ((0, 0), (0, Bp - B)))
  return xs, valid, tuple(jnp.pad(s, ((0, Bp - B), (0, Hp - s.shape[-1]))) for s in states)


def _loop(w_x, b, w_h, peep, xs, valid, h0, c0):
  (h, c), hs = _forward(w_h, input_projection(w_x, b, xs, h0.dtype), valid, h0, c0, save=False)
  return hs, h, c


def _loop_saved(w_x, b, w_h, peep, xs, valid, h0, c0):
  (h, c), (P, Q, F, hs) = _forward(w_h, input_projection(w_x, b, xs, h0.dtype), valid, h0, c0, save=True)
  return (h, c), (P, Q, F, hs, None)


# (hs (T, Bp, Hp), h_T, c_T) on padded, time-major arrays: the two kernels, with the fused kernel's tangent.
_layer = fused.kernel_layer("lstm_pallas_tangent", _loop, _loop_saved, _backward)


def pad_gates(w, H: int, Hp: int, rows: int | None = None, gates: int = 4) -> jax.Array:
  """``w (..., gates * H)`` with each gate block padded with zero columns to ``Hp``, and the rows of a 2-D ``w``
  with zeros to ``rows``."""
  lead = w.shape[:-1]
  if Hp == H and (rows is None or rows == lead[0]):
    return w
  w = jnp.pad(w.reshape(*lead, gates, H), [(0, 0)] * len(lead) + [(0, 0), (0, Hp - H)])
  if rows is not None:
    w = jnp.pad(w, [(0, rows - lead[0]), (0, 0), (0, 0)])
  return w.reshape(*w.shape[:-2], gates * Hp)


def _run(params: LSTMParams, xs, valid, h0, c0):
  B, H = xs.shape[1], h0.shape[-1]
  Hp = pow2(H)
  w_x = pad_gates(params.w_x, H, Hp)
  w_h = pad_gates(params.w_h, H, Hp, rows=Hp)
  b = pad_gates(params.b, H, Hp)
  xs, valid, (h0, c0) = pad_batch(xs, valid, (h0, c0.astype(h0.dtype)), Hp)
  hs, h, c = _layer(w_x, b, w_h, None, xs.astype(w_x.dtype), valid, h0, c0)
  return hs[:, :B, :H], h[:B, :H], c[:B, :H]


def run(
  params: LSTMParams,
  xs: jax.Array,
  state: LSTMState,
  valid,
  resets=None,
  *,
  lengths=None,
  unroll=None,
  remat: int | None = None,
) -> tuple[LSTMState, jax.Array]:
  """The kernel's core: one plain LSTM layer on time-major ``xs (T, B, I)``, state leaves ``(B, H)``.

  Args:
    params: plain :class:`~jaxlstm.LSTMParams`, ``H <= MAX_HIDDEN``.
    xs: inputs ``(T, B, I)`` in processing order.
    state: :class:`~jaxlstm.LSTMState` with leaves ``(B, H)`` in the carry dtype.
    valid: ``(T, B)`` bool validity, or ``None``.
    resets: must be ``None`` (see :func:`why_not`).
    lengths: unused; validity arrives in ``valid``.
    unroll: unused: the loop runs inside one kernel.
    remat: if set, checkpoint every ``remat`` steps (one launch per chunk).

  Returns:
    ``(final_state, hs)``; ``hs (T, B, H)`` in the carry dtype.

  Example:
    >>> from jaxlstm.kernels import pallas, reference
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> xs, state0 = jnp.ones((7, 2, 3)), jaxlstm.zero_state(params, (2,))
    >>> with pallas.interpret():
    ...   state, hs = pallas.run(params, xs, state0, None)
    >>> hs.shape, bool(jnp.allclose(hs, reference.run(params, xs, state0, None, None)[1], atol=1e-6))
    ((7, 2, 5), True)
  """
  del lengths, unroll, resets
  if remat is None:
    hs, h, c = _run(params, xs, valid, state.h, state.c)
  else:

    def core(x, v, r, carry):
      hs, h, c = _run(params, x, v, carry[0], carry[1])
      return hs, (h, c)

    hs, (h, c) = remat_chunks(core, xs, valid, None, (state.h, state.c), remat)
  return LSTMState(h, c), hs


KERNEL = Kernel(name="pallas", why_not=why_not, run=run, rank=30)
