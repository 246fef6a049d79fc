r"""The fast LSTM layer: one input GEMM, a lean recurrence, a hand-written backward pass, and forward mode.

:func:`run` computes exactly what the reference path (:func:`jaxlstm.scan`
over :func:`jaxlstm.lstm_step`) computes, for every LSTM (plain, peephole,
and through :mod:`~jaxlstm.kernels.fused_norm` layer-normalized and
projected), with lengths, masks, resets and reversal, but is organized for
speed on XLA's CPU backend, where a ``while`` loop pays several microseconds
per fusion and per small GEMM on every step:

1. The input projection of all ``T`` steps is one big GEMM before the loop,
   ``zx = xs @ w_x`` of shape ``(T, B, 4H)``. Only ``h @ w_h`` and the bias
   (which fuses into the gates) stay in the loop. (With peepholes the input
   GEMM stays in the loop, which measured faster; see :func:`forward`.)
2. The four gates share one transcendental:
   ``sigmoid(z) = 0.5 * tanh(z / 2) + 0.5``, so a single ``tanh`` runs over the
   whole ``(B, 4H)`` block, with the ``i, f, o`` columns pre-scaled by 0.5.
3. The layer is a :func:`jax.custom_jvp`. While the forward loop has a step's
   gates at hand, it also computes the parts of that step's derivative that do
   not depend on the incoming tangents (activation derivatives, ``tanh(c)``,
   peephole terms) and saves those instead of the gates. The tangent of the
   layer is then a few big GEMMs (input, weight and bias tangents over all
   ``T * B`` rows) plus a recurrence linear in ``(dh, dc)``
   (:mod:`~jaxlstm._src.kernels.linear`). Forward mode (``jvp``, ``jacfwd``)
   runs that recurrence; reverse mode runs its hand-written transpose, the
   backward loop, which carries only the ``(dh, dc)`` recursion: two small
   fusions and one GEMM per step, emitting ``dz``, the gradient of the gate
   pre-activations ``(T, B, 4H)``. JAX transposes the GEMMs, so
   ``dW_h = sum_t h_{t-1}^T dz_t``, ``dW_x`` and ``dxs`` are one big GEMM each.
   ``grad``, ``jvp``, ``jacfwd``, ``jacrev``, ``hessian`` and ``vmap`` all work.
4. No ``(T, B, 4H)`` array is allocated after ``zx``: the forward loop writes
   each step's saved factors over ``zx[t]``, and the backward loop writes
   ``dz[t]`` over them. Fresh memory is costly on CPU (page faults on first
   touch), and these arrays are the largest of the layer.
5. ``remat=k`` (optional) runs the sequence in chunks of ``k`` steps under
   :func:`jax.checkpoint`: training keeps only the chunk-boundary states and
   recomputes each chunk's gates during the backward pass, so memory no longer
   grows with ``T * 4H`` (long sequences, e.g. ``T = 100000``).

The layer shell (:mod:`jaxlstm.kernels.shell`) hands it time-major ``(T, B, F)``
arrays, with all batch axes flattened into one and a backward pass already
reversed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxlstm._src.cells.lstm import LSTMParams, LSTMState
from jaxlstm._src.kernels import fused_norm
from jaxlstm._src.kernels.chunks import (
  gate_consts,
  is_zero,
  project_in_chunks,
  project_steps,
  remat_chunks,
  step_starts,
)
from jaxlstm._src.kernels.linear import linear_recurrence, reference_jvp
from jaxlstm._src.kernels.registry import Kernel, LayerCall


def why_not(call: LayerCall) -> str | None:
  """Why the fused kernel cannot run ``call``, or ``None``.

  It runs every :class:`~jaxlstm.LSTMParams`: plain, peephole, layer-normalized
  and projected (those through :mod:`~jaxlstm.kernels.fused_norm`), in any
  floating dtype, with ``lengths``, ``mask``, ``resets``, ``reverse`` and
  ``remat``, but not ``remat`` with ``resets``.

  Example:
    >>> from jaxlstm.kernels import fused
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5, layer_norm=True, proj_size=2)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("lstm"), params=params, lengths=True, mask=False,
    ...                          resets=True, reverse=True, time_major=False, remat=None)
    >>> fused.why_not(call) is None
    True
    >>> fused.why_not(call._replace(remat=10))
    'it takes remat or resets, not both'
    >>> fused.why_not(call._replace(cell=jaxlstm.get_cell("gru")))
    'it runs LSTM layers only, not gru'
  """
  if call.cell.name != "lstm":
    return f"it runs LSTM layers only, not {call.cell.name}"
  if call.resets and call.remat is not None:
    return "it takes remat or resets, not both"
  return None


def default_unroll() -> int:
  """The fused loops' unroll factor for JAX's default backend, as measured in ``bench/``.

  On a GPU each loop iteration launches a few kernels, and unrolling 8 steps
  cut an H200's training step by 25-35 % (S, M, L configs). On CPU, unroll 4
  and 8 made training 10-35 % slower and 2 was a wash, so it stays 1.

  Example:
    >>> from jaxlstm.kernels import fused
    >>> fused.default_unroll() == (8 if jax.default_backend() == "gpu" else 1)
    True
  """
  return 8 if jax.default_backend() == "gpu" else 1


def _backward_factors(i, f, g, o, c_prev, tc, peep):
  """The parts of a step's backward pass that do not depend on the incoming gradient.

  With ``dh``, ``dc`` the gradients reaching the step's ``h`` and ``c``, the
  backward step is ``dc' = dc + dh * Q``, ``dz = P * [dc', dc', dc', dh]``
  (gate blocks ``i, f, g, o``) and ``dc_prev = dc' * F``. ``Q`` and ``F`` are
  ``(B, H)``; ``P`` is the tuple of its four ``(B, H)`` gate blocks.
  """
  d_i, d_f, d_o = i * (1 - i), f * (1 - f), o * (1 - o)
  P = (g * d_i, c_prev * d_f, i * (1 - g * g), tc * d_o)
  Q = o * (1 - tc * tc)
  F = f
  if peep is not None:
    # Peepholes: dc also feeds the output gate through p_o, and c_prev the input and forget gates.
    Q = Q + tc * d_o * peep[2]
    F = F + g * d_i * peep[0] + c_prev * d_f * peep[1]
  return P, Q, F


def _step(w_h, b, peep, consts, state0, carry, inputs, *, save):
  """One step of the recurrence on precomputed ``zx``; a reset step starts from ``state0``.

  Returns the new carry and ``h``, or with ``save`` the new carry and
  ``((P, Q, F), h, c)`` for the backward pass.
  """
  zx, v, r = inputs
  if r is not None:
    rr = r[:, None]
    carry = (jnp.where(rr, state0[0], carry[0]), jnp.where(rr, state0[1], carry[1]))
  h, c_prev = carry
  scale, add = consts
  H = c_prev.shape[-1]
  cdt = w_h.dtype
  # The bias is added here, where it fuses into the gate nonlinearity, not in a pass over all of zx.
  z = zx + b + (h.astype(cdt) @ w_h).astype(zx.dtype)  # (B, 4H)
  if peep is None:
    # One tanh for all four gates; the slices below fuse into the cell update.
    a = jnp.tanh(z * scale) * scale + add
    i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
    c = f * c_prev + i * g
  else:
    # The output gate's peephole reads the new c, so its tanh comes after the update.
    pc = jnp.concatenate([peep[0] * c_prev, peep[1] * c_prev, jnp.zeros_like(c_prev)], axis=-1)
    a3 = jnp.tanh((z[:, : 3 * H] + pc) * scale[: 3 * H]) * scale[: 3 * H] + add[: 3 * H]
    i, f, g = a3[:, :H], a3[:, H : 2 * H], a3[:, 2 * H :]
    c = f * c_prev + i * g
    o = 0.5 * jnp.tanh(0.5 * (z[:, 3 * H :] + peep[2] * c)) + 0.5
  tc = jnp.tanh(c)
  h_new = o * tc
  # Factors at invalid steps are never used: the backward pass zeroes the gradient there.
  factors = _backward_factors(i, f, g, o, c_prev, tc, peep) if save else None
  if v is not None:
    vv = v[:, None]
    h_new = jnp.where(vv, h_new, h)
    c = jnp.where(vv, c, c_prev)
  return (h_new, c), ((factors, h_new, c) if save else h_new)


def forward(w_x, b, w_h, peep, xs, valid, resets, h0, c0, unroll, save):
  """The forward loop on time-major ``xs (T, B, I)``: ``((h_T, c_T), hs)``, ``hs (T, B, H)`` the carried ``h``.

  With ``save``, ``((h_T, c_T), (P, Q, F, hs, cs))``: the backward factors of :func:`_backward_factors`
  (``P (T, B, 4H)`` in gate blocks ``i, f, g, o``; ``Q``, ``F (T, B, H)``) and, with peepholes, the carried
  ``cs`` (else ``None``).
  """
  sdt = c0.dtype
  T, B, _ = xs.shape
  H = c0.shape[-1]
  consts = gate_consts(H, sdt)
  if peep is not None:
    peep = peep.astype(sdt)
  step_zx = functools.partial(_step, w_h, b.astype(sdt), peep, consts, (h0, c0), save=save)
  # With peepholes the input projection stays in the loop, one small GEMM per step: hoisted out of it, XLA's
  # CPU backend ran the peephole step far slower (B=32, T=100, I=32, H=128, this 2-core CPU: training 96 ms
  # hoisted, 29 ms in the loop, 44 ms for the reference scan). Without peepholes hoisting wins (27.6 vs 29.0 ms).
  in_loop = peep is not None
  step: Callable = step_zx
  if in_loop:
    step = lambda carry, inp: step_zx(carry, ((inp[0] @ w_x).astype(sdt), *inp[1:]))

  # The input projections of a run of steps in one GEMM, outside the loop.
  project = (lambda x: x) if in_loop else functools.partial(project_steps, w_x=w_x, dtype=sdt)

  if not save:
    run = lambda zx, rest, carry: lax.scan(step, carry, (zx, *rest), unroll=unroll)  # noqa: E731
    return project_in_chunks(run, project, xs, (valid, resets), (h0, c0))
  zx = project(xs)

  # Training saves each step's backward factors, computed while its gates are at hand; P of step t
  # is written over zx[t] in place (its only reader), since a fresh (T, B, 4H) buffer would cost a
  # pass over new memory. The backward pass then reads only what its loop needs.
  def body(t, carry):
    h, c, P, Q, F, hs, cs = carry
    at = functools.partial(lax.dynamic_index_in_dim, index=t, axis=0, keepdims=False)
    inputs = (at(zx if in_loop else P), None if valid is None else at(valid), None if resets is None else at(resets))
    (h, c), ((p, q, f), h_out, c_out) = step((h, c), inputs)
    put = functools.partial(lax.dynamic_update_index_in_dim, index=t, axis=0)
    cs = None if cs is None else put(cs, c_out)
    # P's gate blocks go straight into their columns: four small in-place writes run faster on
    # XLA's CPU backend than building the (B, 4H) row first (a concatenate, or a sum of pads).
    for k, block in enumerate(p):
      P = lax.dynamic_update_slice(P, block[None], (t, 0, k * H))
    return h, c, P, put(Q, q), put(F, f), put(hs, h_out), cs

  zeros = jnp.zeros((T, B, H), sdt)
  cs = None if peep is None else zeros  # the peephole gradient reads c
  P0 = jnp.zeros((T, B, 4 * H), sdt) if in_loop else zx
  h, c, P, Q, F, hs, cs = lax.fori_loop(0, T, body, (h0, c0, P0, zeros, zeros, zeros, cs), unroll=unroll)
  return (h, c), (P, Q, F, hs, cs)


def tangent(coefs, lins, *, unroll):
  """The layer's tangent recurrence, linear in ``lins = (a, dh0, dc0)``; the transpose of :func:`backward`.

  ``coefs = (w_h, P, Q, F, valid, resets)`` as saved by the forward loop and ``a (T, B, 4H)`` the hoisted part
  of the gate tangents (input, weight, bias and peephole-weight terms). A reset step starts from the initial
  state's tangent ``(dh0, dc0)``. Returns ``(dhs (T, B, H), dh_T, dc_T)``.
  """
  w_h, P, Q, F, valid, resets = coefs
  a, dh0, dc0 = lins
  H = dh0.shape[-1]
  sdt, cdt = dh0.dtype, w_h.dtype

  def step(carry, inp):
    dh, dc = carry
    a_t, p, q, f_, v, r = inp
    if r is not None:
      rr = r[:, None]
      dh, dc = jnp.where(rr, dh0, dh), jnp.where(rr, dc0, dc)
    dz = a_t + (dh.astype(cdt) @ w_h).astype(sdt)
    pz = p * dz
    dc_new = dc * f_ + pz[:, :H] + pz[:, H : 2 * H] + pz[:, 2 * H : 3 * H]
    dh_new = dc_new * q + pz[:, 3 * H :]
    if v is not None:
      vv = v[:, None]
      dh_new, dc_new = jnp.where(vv, dh_new, dh), jnp.where(vv, dc_new, dc)
    return (dh_new, dc_new), dh_new

  (dh, dc), dhs = lax.scan(step, (dh0, dc0), (a, P, Q, F, valid, resets), unroll=unroll)
  return dhs, dh, dc


def backward(coefs, cts, *, unroll):
  """The transpose of :func:`tangent`: the layer's backward loop, carrying only the ``(dh, dc)`` recursion.

  ``cts = (d_hs (T, B, H), d_hT, d_cT)``; returns ``(dz (T, B, 4H), dh0, dc0)``, ``dz`` the gradient of the
  gate pre-activations, from which the weight gradients are GEMMs over all ``T * B`` rows. The gradient reaching
  a reset step's starting state goes to the initial state.
  """
  w_h, P, Q, F, valid, resets = coefs
  d_hs, d_hT, d_cT = cts
  T = P.shape[0]
  sdt, cdt = d_hT.dtype, w_h.dtype
  w_hT = w_h.T  # (4H, H), transposed once outside the loop

  # Two small fusions and a GEMM per step.
  def body(k, carry):
    dh, dc, buf, acc = carry
    t = T - 1 - k
    p, q, f_, dy = buf[t], Q[t], F[t], d_hs[t]
    v = None if valid is None else valid[t]
    dh = dh + dy
    if v is not None:
      vv = v[:, None]
      dh_skip, dc_skip = jnp.where(vv, 0, dh), jnp.where(vv, 0, dc)
      dh, dc = jnp.where(vv, dh, 0), jnp.where(vv, dc, 0)
    dc = dc + dh * q
    dz = p * jnp.concatenate([dc, dc, dc, dh], axis=-1)  # (B, 4H)
    dh_prev = (dz.astype(cdt) @ w_hT).astype(sdt)
    dc_prev = dc * f_
    if v is not None:
      dh_prev, dc_prev = dh_prev + dh_skip, dc_prev + dc_skip
    if resets is not None:
      rr = resets[t][:, None]
      acc = (acc[0] + jnp.where(rr, dh_prev, 0), acc[1] + jnp.where(rr, dc_prev, 0))
      dh_prev, dc_prev = jnp.where(rr, 0, dh_prev), jnp.where(rr, 0, dc_prev)
    # dz[t] overwrites P[t], its only reader, so the loop needs no new (T, B, 4H) buffer.
    return dh_prev, dc_prev, lax.dynamic_update_index_in_dim(buf, dz, t, 0), acc

  acc = None if resets is None else (jnp.zeros_like(d_hT), jnp.zeros_like(d_cT))
  dh0, dc0, dz, acc = lax.fori_loop(0, T, body, (d_hT, d_cT, P, acc), unroll=unroll)
  if acc is not None:
    dh0, dc0 = dh0 + acc[0], dc0 + acc[1]
  return dz, dh0, dc0


def hoisted_tangent(w_x, w_h, peep, xs, hs, cs, resets, h0, c0, tangents) -> jax.Array:
  """``a (T, B, 4H)``: the part of the gate tangents that does not go through the recurrence.

  ``tangents = (dw_x, db, dw_h, dpeep, dxs)`` (each possibly a symbolic zero) and ``hs``, ``cs`` the carried
  states of the forward loop (``cs`` only with peepholes). The input, weight, bias and peephole-weight terms are
  GEMMs and elementwise products over all ``T * B`` rows at once, outside any loop; their transposes are the
  layer's weight gradients.
  """
  dw_x, db, dw_h, dpeep, dxs = tangents
  T, B, _ = xs.shape
  H = c0.shape[-1]
  sdt = c0.dtype
  mm = functools.partial(jnp.matmul, preferred_element_type=sdt)  # float32 sums under 16-bit params
  terms = []
  if not is_zero(dxs):
    terms.append(mm(dxs.reshape(T * B, dxs.shape[-1]).astype(w_x.dtype), w_x))
  if not is_zero(dw_x):
    terms.append(mm(xs.reshape(T * B, xs.shape[-1]), dw_x))
  if not is_zero(dw_h):
    h_prevs = step_starts(hs, h0, resets)
    terms.append(mm(h_prevs.reshape(T * B, H).astype(w_h.dtype), dw_h))
  a = functools.reduce(jnp.add, terms) if terms else jnp.zeros((T * B, 4 * H), sdt)
  a = a.reshape(T, B, 4 * H)
  if not is_zero(db):
    a = a + db.astype(sdt)
  if peep is not None and not is_zero(dpeep):
    c_prevs = step_starts(cs, c0, resets)
    dpeep = dpeep.astype(sdt)
    zeros = jnp.zeros_like(cs)
    a = a + jnp.concatenate([dpeep[0] * c_prevs, dpeep[1] * c_prevs, zeros, dpeep[2] * cs], axis=-1)
  return a


_recurrence = linear_recurrence("lstm_fused_tangent", tangent, backward)


def tangent_rows(valid, resets):
  """The batch axis of each leaf of :func:`tangent`'s coefficients, linear inputs and outputs (for ``vmap``)."""
  coef_rows = (None, 1, 1, 1) + (() if valid is None else (1,)) + (() if resets is None else (1,))
  return coef_rows, (1, 0, 0), (1, 0, 0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(9,))
def _layer(w_x, b, w_h, peep, xs, valid, resets, h0, c0, unroll):
  """``(hs (T, B, H), h_T, c_T)`` of the layer on time-major ``xs (T, B, I)``; ``hs`` is the carried ``h``."""
  (h, c), hs = forward(w_x, b, w_h, peep, xs, valid, resets, h0, c0, unroll, save=False)
  return hs, h, c


def _tangent_of(recurrence, saved, primals, tangents, unroll):
  """The layer's tangent from the forward loop's ``saved = ((h, c), (P, Q, F, hs, cs))``: the hoisted GEMMs
  (input and weight tangents over all ``T * B`` rows) plus the linear recurrence, whose transpose is the
  backward loop."""
  w_x, b, w_h, peep, xs, valid, resets, h0, c0 = primals
  dw_x, db, dw_h, dpeep, dxs, _, _, dh0, dc0 = tangents
  (h, c), (P, Q, F, hs, cs) = saved
  a = hoisted_tangent(w_x, w_h, peep, xs, hs, cs, resets, h0, c0, (dw_x, db, dw_h, dpeep, dxs))
  dh0 = jnp.zeros_like(h0) if is_zero(dh0) else dh0
  dc0 = jnp.zeros_like(c0) if is_zero(dc0) else dc0
  coefs = (w_h, P, Q, F, valid, resets)
  d_hs, d_h, d_c = recurrence(coefs, (a, dh0, dc0), rows=tangent_rows(valid, resets), unroll=unroll)
  return (hs, h, c), (d_hs, d_h, d_c)


@functools.partial(_layer.defjvp, symbolic_zeros=True)
def _layer_jvp(unroll, primals, tangents):
  w_x, b, w_h, peep, xs, valid, resets, h0, c0 = primals
  saved = forward(w_x, b, w_h, peep, xs, valid, resets, h0, c0, unroll, save=True)
  return _tangent_of(_recurrence, saved, primals, tangents, unroll)


def kernel_layer(
  name: str, run_loop: Callable, run_loop_saved: Callable | None, run_backward: Callable | None
) -> Callable:
  """An LSTM layer on another kernel's two loops, with this kernel's tangent, forward mode and XLA fallbacks.

  For a kernel that runs :func:`forward` and :func:`backward`'s loops in its own code (native, Pallas), over
  the same saved factors:

  * ``run_loop(w_x, b, w_h, peep, xs, valid, h0, c0) -> (hs, h_T, c_T)``: the forward loop;
  * ``run_loop_saved(...)`` (same arguments) ``-> ((h_T, c_T), (P, Q, F, hs, cs))``: the training forward;
  * ``run_backward(w_h, P, Q, F, valid, d_hs, d_hT, d_cT) -> (dz, dh0, dc0)``: the backward loop.

  ``run_loop_saved=None`` and ``run_backward=None`` train on this kernel's own XLA loops, :func:`forward` and
  :func:`backward`: a kernel whose forward loop alone is faster than this kernel's.

  Returns ``layer(w_x, b, w_h, peep, xs, valid, h0, c0) -> (hs, h_T, c_T)``, a :func:`jax.custom_jvp` like this
  kernel's: reverse mode runs ``run_backward``, forward mode :func:`tangent`. Second-order autodiff, which
  differentiates the loops' own calls, goes through :func:`forward` and :func:`backward` instead (through
  :func:`~jaxlstm._src.kernels.linear.reference_jvp`): custom calls have no derivative rules of their own.
  Resets are not passed: the other kernels refuse them.
  """

  def xla_saved(w_x, b, w_h, peep, xs, valid, h0, c0):
    return forward(w_x, b, w_h, peep, xs, valid, None, h0, c0, 1, save=True)

  xla_backward = functools.partial(backward, unroll=1)
  saved_call = xla_saved if run_loop_saved is None else reference_jvp(run_loop_saved, xla_saved)
  backward_call = (
    xla_backward
    if run_backward is None
    else reference_jvp(lambda coefs, cts: run_backward(*coefs[:5], *cts), xla_backward)
  )
  recurrence = linear_recurrence(name, tangent, lambda coefs, cts, *, unroll: backward_call(coefs, cts))

  @jax.custom_jvp
  def layer(w_x, b, w_h, peep, xs, valid, h0, c0):
    return run_loop(w_x, b, w_h, peep, xs, valid, h0, c0)

  @functools.partial(layer.defjvp, symbolic_zeros=True)
  def _(primals, tangents):
    w_x, b, w_h, peep, xs, valid, h0, c0 = primals
    dw_x, db, dw_h, dpeep, dxs, dv, dh0, dc0 = tangents
    saved = saved_call(*primals)
    full = (w_x, b, w_h, peep, xs, valid, None, h0, c0)
    return _tangent_of(recurrence, saved, full, (dw_x, db, dw_h, dpeep, dxs, dv, None, dh0, dc0), default_unroll())

  return layer


def _run(params, xs, valid, resets, h0, c0, unroll):
  """The layer on time-major ``xs (T, B, I)``; returns ``(hs (T, B, H), h_T, c_T)``, ``hs`` unmasked."""
  if params.layer_norm is not None or params.w_proj is not None:
    return fused_norm.run(params, xs, valid, resets, h0, c0, unroll)
  xs = xs.astype(params.w_x.dtype)
  return _layer(params.w_x, params.b, params.w_h, params.peephole, xs, valid, resets, h0, c0, unroll)


def run(
  params: LSTMParams,
  xs: jax.Array,
  state: LSTMState,
  valid,
  resets=None,
  *,
  lengths=None,
  unroll: int | bool | None = None,
  remat: int | None = None,
) -> tuple[LSTMState, jax.Array]:
  """The kernel's core: one LSTM layer on time-major ``xs (T, B, I)``, state leaves ``(B, H)``.

  Args:
    params: :class:`~jaxlstm.LSTMParams` without layer norm or projection.
    xs: inputs ``(T, B, I)`` in processing order.
    state: :class:`~jaxlstm.LSTMState` with leaves ``(B, H)``, in the carry
      dtype (float32 under 16-bit params).
    valid: ``(T, B)`` bool validity, or ``None``.
    resets: ``(T, B)`` bool, or ``None``: a reset step starts again from ``state``.
    lengths: unused; validity arrives in ``valid``.
    unroll: unroll factor of the forward and backward loops; ``None`` picks
      :func:`default_unroll`.
    remat: if set, checkpoint every ``remat`` steps: the backward pass
      recomputes each chunk's gates, trading about one extra forward pass for
      memory that no longer holds ``(T, B, 4H)`` gate arrays.

  Returns:
    ``(final_state, hs)``; ``hs (T, B, H)`` in the carry dtype (the carried
    ``h``, which the shell zeroes at invalid steps).

  Example:
    The core on time-major inputs, held to the reference kernel, its oracle:

    >>> from jaxlstm.kernels import fused, reference
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5, peephole=True)
    >>> xs, state0 = jnp.ones((7, 2, 3)), jaxlstm.zero_state(params, (2,))
    >>> state, hs = fused.run(params, xs, state0, None)
    >>> hs.shape, state.c.shape
    ((7, 2, 5), (2, 5))
    >>> bool(jnp.allclose(hs, reference.run(params, xs, state0, None, None)[1], atol=1e-6))
    True
  """
  del lengths
  if unroll is None:
    unroll = default_unroll()
  if remat is None:
    hs, h, c = _run(params, xs, valid, resets, state.h, state.c, unroll)
  else:

    def core(x, v, r, carry):
      hs, h, c = _run(params, x, v, r, carry[0], carry[1], unroll)
      return hs, (h, c)

    hs, (h, c) = remat_chunks(core, xs, valid, None, (state.h, state.c), remat)
  return LSTMState(h, c), hs


KERNEL = Kernel(name="fused", why_not=why_not, run=run, rank=10)
