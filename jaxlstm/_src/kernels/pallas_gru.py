r"""The Pallas GRU layer for CUDA GPUs: the whole time loop in one kernel launch.

The GRU counterpart of :mod:`~jaxlstm.kernels.pallas`, with PyTorch's
semantics (gates r, z, n; ``b_hn`` inside the reset product), organized as
that kernel is:

* The grid splits the batch into blocks of ``BLOCK_B`` rows; each program
  keeps its block's ``h`` in registers for all ``T`` steps.
* Each step is three ``(BLOCK_B, H) x (H, H)`` tensor-core dots, one per
  gate, and the update ``h' = n + z (h - n)`` in registers; the recurrent
  weights are loaded once per program where they fit
  (:func:`jaxlstm.kernels.pallas.resident`).
* The input projection ``xs @ w_x + b`` is one XLA GEMM before the launch.
  The training forward saves :mod:`~jaxlstm.kernels.fused_gru`'s factors
  ``[P_r, P_z, Q]``, ``P_n`` and ``z``; the backward kernel runs the ``dh``
  recursion in reverse, in one launch, and emits ``g``, the gradient of
  ``h W_h + b``, and ``g_n``, of the input side of ``n``; the weight
  gradients are XLA GEMMs over all ``T * B`` rows. The layer is the fused GRU
  kernel's :func:`jax.custom_jvp` over these loops
  (:func:`jaxlstm.kernels.fused_gru.kernel_layer`), so forward mode runs its
  tangent loop.

It runs GRU layers with ``lengths``, ``mask``, ``reverse`` and ``remat`` (not
``resets``), hidden sizes up to :data:`jaxlstm.kernels.pallas.MAX_HIDDEN`,
float32 and 16-bit params with a float32 carry, on a CUDA backend, or on any
backend inside :func:`jaxlstm.kernels.pallas.interpret`. ``impl="auto"``
ranks it after the fused GRU kernel until GPU measurements say otherwise.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from jaxlstm._src.cells.gru import GRUParams, GRUState
from jaxlstm._src.kernels import fused_gru, pallas
from jaxlstm._src.kernels.chunks import remat_chunks
from jaxlstm._src.kernels.pallas import (
  BLOCK_B,
  block_specs,
  dot,
  gate_weights,
  input_projection,
  launch,
  pad_batch,
  pad_gates,
  pow2,
  resident,
)
from jaxlstm._src.kernels.registry import Kernel, LayerCall


def why_not(call: LayerCall) -> str | None:
  """Why the Pallas GRU kernel cannot run ``call``, or ``None``.

  Example:
    >>> from jaxlstm.kernels import pallas, pallas_gru
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("gru"), params=params, lengths=True, mask=True,
    ...                          resets=False, reverse=True, time_major=False, remat=4)
    >>> with pallas.interpret():
    ...   pallas_gru.why_not(call) is None
    True
    >>> pallas_gru.why_not(call._replace(resets=True))
    'it takes lengths and masks but not resets; impl="fused_gru" does'
  """
  if call.cell.name != "gru":
    return f"it runs GRU layers only, not {call.cell.name}"
  if call.resets:
    return 'it takes lengths and masks but not resets; impl="fused_gru" does'
  return pallas.runs_here(call.params.w_h.shape[0], call.params.w_x.dtype, "fused_gru")


def _forward_kernel(*refs, T: int, Hp: int, masked: bool, save: bool, keep: bool):
  """One program: ``T`` GRU steps of one batch block; with ``save`` also the backward factors."""
  zx_ref, w_ref, bhn_ref, *rest = refs
  v_ref = rest.pop(0) if masked else None
  h0_ref, hs_ref, hT_ref, *saved = rest
  w = gate_weights(w_ref, Hp, keep, gates=3)
  sdt = hs_ref.dtype
  b_hn = bhn_ref[...].astype(sdt)[None, :]
  gate = lambda t, k: zx_ref[t, :, pl.ds(k * Hp, Hp)].astype(sdt)  # noqa: E731

  def body(t, h):
    sig = lambda v: 0.5 * jnp.tanh(0.5 * v) + 0.5  # noqa: E731 (the fused kernels' form of the sigmoid)
    r = sig(gate(t, 0) + dot(h, w[0]()))
    z = sig(gate(t, 1) + dot(h, w[1]()))
    hn = dot(h, w[2]()) + b_hn
    n = jnp.tanh(gate(t, 2) + r * hn)
    h_new = n + z * (h - n)
    if save:
      # fused_gru.py's factors: [P_r, P_z, Q] (its F3), P_n and z.
      F3_ref, Pn_ref, Z_ref = saved
      p_n = (1 - z) * (1 - n * n)
      for k, f in enumerate((p_n * hn * (r - r * r), (h - n) * (z - z * z), p_n * r)):
        F3_ref[t, :, pl.ds(k * Hp, Hp)] = f.astype(F3_ref.dtype)
      Pn_ref[t] = p_n
      Z_ref[t] = z
    if v_ref is not None:
      h_new = jnp.where(v_ref[t][:, None] > 0, h_new, h)
    hs_ref[t] = h_new
    return h_new

  hT_ref[...] = lax.fori_loop(0, T, body, h0_ref[...])


def _backward_kernel(*refs, T: int, Hp: int, masked: bool, keep: bool):
  """One program: the ``dh`` recursion of one batch block in reverse, emitting ``g`` and ``g_n``."""
  F3_ref, Pn_ref, Z_ref, w_ref, *rest = refs
  v_ref = rest.pop(0) if masked else None
  dhs_ref, dhT_ref, g_ref, gn_ref, dh0_ref = rest
  w = gate_weights(w_ref, Hp, keep, gates=3)

  def body(k, dh):
    t = T - 1 - k
    dh = dh + dhs_ref[t]
    if v_ref is not None:
      v = v_ref[t][:, None] > 0
      dh_skip, dh = jnp.where(v, 0.0, dh), jnp.where(v, dh, 0.0)
    dh_prev = Z_ref[t] * dh
    for j in range(3):
      g = F3_ref[t, :, pl.ds(j * Hp, Hp)].astype(dh.dtype) * dh
      g_ref[t, :, pl.ds(j * Hp, Hp)] = g.astype(g_ref.dtype)
      dh_prev = dh_prev + dot(g, w[j](), trans_b=True)
    gn_ref[t] = Pn_ref[t] * dh
    if v_ref is not None:
      dh_prev = dh_prev + dh_skip
    return dh_prev

  dh0_ref[...] = lax.fori_loop(0, T, body, dhT_ref[...])


def _forward(w_h, b_hn, zx, valid, h0, save: bool):
  """The forward kernel on padded ``zx (T, Bp, 3Hp)`` (biases included): ``(hs, h_T)``, and with ``save``
  ``(hs, h_T, F3, P_n, Z)``."""
  T, Bp, _ = zx.shape
  Hp = h0.shape[-1]
  masked = valid is not None
  sdt = h0.dtype
  ins = [zx, w_h, b_hn] + ([valid.astype(sdt)] if masked else []) + [h0]
  in_specs = block_specs(T, Hp, "zwu" + ("v" if masked else "") + "b", gates=3)
  seq = jax.ShapeDtypeStruct((T, Bp, Hp), sdt)
  out_shape, out_names = [seq, jax.ShapeDtypeStruct((Bp, Hp), sdt)], "sb"
  if save:
    out_shape += [jax.ShapeDtypeStruct(zx.shape, zx.dtype), seq, seq]
    out_names += "zss"
  kernel = functools.partial(
    _forward_kernel, T=T, Hp=Hp, masked=masked, save=save, keep=resident(Hp, w_h.dtype, gates=3)
  )
  out_specs = block_specs(T, Hp, out_names, gates=3)
  return launch(kernel, "jaxlstm_gru_forward", Bp // BLOCK_B, in_specs, out_specs, out_shape)(*ins)


def _backward(w_h, F3, P_n, Z, valid, d_hs, d_hT):
  """The backward kernel on padded shapes, the transpose of :func:`jaxlstm.kernels.fused_gru.tangent`:
  ``(g (T, Bp, 3Hp), g_n (T, Bp, Hp), dh0)``."""
  T, Bp, _ = F3.shape
  Hp = d_hT.shape[-1]
  masked = valid is not None
  sdt = d_hT.dtype
  ins = [F3, P_n, Z, w_h] + ([valid.astype(sdt)] if masked else []) + [d_hs, d_hT]
  in_specs = block_specs(T, Hp, "zssw" + ("v" if masked else "") + "sb", gates=3)
  out_shape = [jax.ShapeDtypeStruct(F3.shape, F3.dtype), jax.ShapeDtypeStruct(P_n.shape, sdt)]
  out_shape.append(jax.ShapeDtypeStruct((Bp, Hp), sdt))
  kernel = functools.partial(_backward_kernel, T=T, Hp=Hp, masked=masked, keep=resident(Hp, w_h.dtype, gates=3))
  out_specs = block_specs(T, Hp, "zsb", gates=3)
  return tuple(launch(kernel, "jaxlstm_gru_backward", Bp // BLOCK_B, in_specs, out_specs, out_shape)(*ins))


def _loop(w_x, b, w_h, b_hn, xs, valid, h0):
  hs, h = _forward(w_h, b_hn, input_projection(w_x, b, xs, h0.dtype), valid, h0, save=False)
  return hs, h


def _loop_saved(w_x, b, w_h, b_hn, xs, valid, h0):
  hs, h, F3, P_n, Z = _forward(w_h, b_hn, input_projection(w_x, b, xs, h0.dtype), valid, h0, save=True)
  return h, (F3, P_n, Z, hs)


# (hs (T, Bp, Hp), h_T) on padded, time-major arrays: the two kernels, with the fused GRU kernel's tangent.
_layer = fused_gru.kernel_layer("gru_pallas_tangent", _loop, _loop_saved, _backward)


def _run(params: GRUParams, xs, valid, h0):
  B, H = xs.shape[1], h0.shape[-1]
  Hp = pow2(H)
  # Padded units have zero weights and biases: r = z = 1/2, n = 0, so h stays exactly 0 there.
  w_x = pad_gates(params.w_x, H, Hp, gates=3)
  w_h = pad_gates(params.w_h, H, Hp, rows=Hp, gates=3)
  b = pad_gates(params.b, H, Hp, gates=3)
  b_hn = jnp.pad(params.b_hn, (0, Hp - H))
  xs, valid, (h0,) = pad_batch(xs, valid, (h0,), Hp)
  hs, h = _layer(w_x, b, w_h, b_hn, xs.astype(w_x.dtype), valid, h0)
  return hs[:, :B, :H], h[:B, :H]


def run(
  params: GRUParams,
  xs: jax.Array,
  state: GRUState,
  valid,
  resets=None,
  *,
  lengths=None,
  unroll=None,
  remat: int | None = None,
) -> tuple[GRUState, jax.Array]:
  """The kernel's core: one GRU layer on time-major ``xs (T, B, I)``, state ``h (B, H)``.

  Args:
    params: :class:`~jaxlstm.GRUParams`, ``H <= MAX_HIDDEN``.
    xs: inputs ``(T, B, I)`` in processing order.
    state: :class:`~jaxlstm.GRUState` with ``h (B, H)`` in the carry dtype.
    valid: ``(T, B)`` bool validity, or ``None``.
    resets: must be ``None`` (see :func:`why_not`).
    lengths: unused; validity arrives in ``valid``.
    unroll: unused: the loop runs inside one kernel.
    remat: if set, checkpoint every ``remat`` steps (one launch per chunk).

  Returns:
    ``(final_state, hs)``; ``hs (T, B, H)`` in the carry dtype.

  Example:
    >>> from jaxlstm.kernels import pallas, pallas_gru, reference
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> xs, state0 = jnp.ones((7, 2, 3)), jaxlstm.zero_state(params, (2,))
    >>> with pallas.interpret():
    ...   state, hs = pallas_gru.run(params, xs, state0, None)
    >>> hs.shape, bool(jnp.allclose(hs, reference.run(params, xs, state0, None, None)[1], atol=1e-6))
    ((7, 2, 5), True)
  """
  del lengths, unroll, resets
  h0 = state.h
  if remat is None:
    hs, h = _run(params, xs, valid, h0)
  else:
    hs, h = remat_chunks(lambda x, v, r, carry: _run(params, x, v, carry), xs, valid, None, h0, remat)
  return GRUState(h), hs


KERNEL = Kernel(name="pallas_gru", why_not=why_not, run=run, rank=31)
