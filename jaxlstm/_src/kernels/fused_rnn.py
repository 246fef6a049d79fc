r"""The fast Elman RNN layer (tanh or relu): a hoisted input GEMM, one GEMM a step, and a hand-written backward pass.

:func:`run` computes exactly what the reference path (:func:`jaxlstm.scan`
over :func:`jaxlstm.rnn_step`) computes, ``h' = act(x W_x + h W_h + b)``, with
lengths, masks, resets and reversal, organized as the fused LSTM kernel
(:mod:`~jaxlstm.kernels.fused`) is for XLA's CPU backend:

1. The input projection of all ``T`` steps is one GEMM before the loop,
   ``zx = xs @ w_x (T, B, H)``; only ``h @ w_h`` and the bias (which fuses
   into the activation) stay in the loop.
2. The layer is a :func:`jax.custom_jvp` whose tangent is a linear
   recurrence with a hand-written transpose (:mod:`~jaxlstm.kernels.linear`),
   so ``grad``, ``jvp``, ``jacfwd``, ``hessian`` and ``vmap`` all work and
   reverse mode runs the fast backward loop. With the activation's derivative
   ``D = act'(z)`` saved by the forward loop (``1 - h'^2`` for tanh,
   ``z > 0`` for relu) and ``a`` the hoisted input, weight and bias tangents,

   .. math::

     dh' = D \odot (a + dh\, W_h), \qquad \text{transposed:}\quad
     dz = D \odot dh', \quad dh = dz\, W_h^T,

   one fusion and one GEMM a step each way; the weight gradients are then
   GEMMs over all ``T * B`` rows.
3. The forward loop writes ``D`` over ``zx`` and the backward loop writes
   ``dz`` over ``D``: no ``(T, B, H)`` array beyond ``zx`` and the outputs is
   allocated (fresh memory costs page faults on CPU).
4. ``remat=k`` runs the sequence in chunks of ``k`` steps under
   :func:`jax.checkpoint`, resets included.

The layer shell (:mod:`jaxlstm.kernels.shell`) hands it time-major ``(T, B, F)``
arrays, with all batch axes flattened into one and a backward pass already
reversed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxlstm._src.cells.rnn import RNNParams, RNNState
from jaxlstm._src.kernels.chunks import is_zero, project_in_chunks, project_steps, remat_chunks, step_starts
from jaxlstm._src.kernels.fused import default_unroll
from jaxlstm._src.kernels.linear import linear_recurrence
from jaxlstm._src.kernels.registry import Kernel, LayerCall


def why_not(call: LayerCall) -> str | None:
  """Why the fused RNN kernel cannot run ``call``, or ``None``.

  It runs every :class:`~jaxlstm.RNNParams` (tanh and relu), in any floating
  dtype, with ``lengths``, ``mask``, ``resets``, ``reverse`` and ``remat``.

  Example:
    >>> from jaxlstm.kernels import fused_rnn
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 5, activation="relu")
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("rnn"), params=params, lengths=True, mask=True,
    ...                          resets=True, reverse=True, time_major=False, remat=4)
    >>> fused_rnn.why_not(call) is None
    True
    >>> fused_rnn.why_not(call._replace(cell=jaxlstm.get_cell("gru")))
    'it runs Elman RNN layers only, not gru'
  """
  if call.cell.name != "rnn":
    return f"it runs Elman RNN layers only, not {call.cell.name}"
  return None


def _step(w_h, b, relu, h_reset, h, inputs, *, save):
  """One step on the precomputed projection ``zx (B, H)``; a reset step starts from ``h_reset``.

  Returns the new carry and ``h``, or with ``save`` the new carry and ``(D, h)``.
  """
  zx, v, rs = inputs
  if rs is not None:
    h = jnp.where(rs[:, None], h_reset, h)
  z = zx + b + (h.astype(w_h.dtype) @ w_h).astype(h.dtype)  # (B, H)
  if relu:
    h_new = jnp.maximum(z, 0)
    # jax.nn.relu's derivative, 0 at z = 0, as the reference path differentiates it.
    d = (z > 0).astype(z.dtype) if save else None
  else:
    h_new = jnp.tanh(z)
    d = 1 - h_new * h_new if save else None
  # D at invalid steps is never used: the backward pass zeroes the gradient there.
  if v is not None:
    h_new = jnp.where(v[:, None], h_new, h)
  return h_new, ((d, h_new) if save else h_new)


def _forward(w_x, b, w_h, xs, valid, resets, h0, h_reset, relu, unroll, save):
  sdt = h0.dtype
  T = xs.shape[0]
  step = functools.partial(_step, w_h, b.astype(sdt), relu, h_reset, save=save)
  project = functools.partial(project_steps, w_x=w_x, dtype=sdt)  # a run of steps in one GEMM, outside the loop
  if not save:
    run = lambda zx, rest, h: lax.scan(step, h, (zx, *rest), unroll=unroll)  # noqa: E731
    return project_in_chunks(run, project, xs, (valid, resets), h0)
  zx = project(xs)

  # Training writes D of step t over zx[t], its only reader, instead of into a fresh buffer.
  def body(t, carry):
    h, D, hs = carry
    at = functools.partial(lax.dynamic_index_in_dim, index=t, axis=0, keepdims=False)
    h, (d, h_out) = step(h, (at(D), None if valid is None else at(valid), None if resets is None else at(resets)))
    put = functools.partial(lax.dynamic_update_index_in_dim, index=t, axis=0)
    return h, put(D, d), put(hs, h_out)

  h, D, hs = lax.fori_loop(0, T, body, (h0, zx, jnp.zeros_like(zx)), unroll=unroll)
  return h, (D, hs)


def _tangent(coefs, lins, *, unroll):
  """The tangent recurrence, linear in ``lins = (a, dh0, dh_reset)``; the transpose of :func:`_backward`.

  ``coefs = (w_h, D, valid, resets)``; ``a (T, B, H)`` is the hoisted input, weight and bias tangent of the
  pre-activation. A reset step starts from ``dh_reset``. Returns ``(dhs (T, B, H), dh_T)``.
  """
  w_h, D, valid, resets = coefs
  a, dh0, dh_reset = lins
  sdt, cdt = dh0.dtype, w_h.dtype

  def step(dh, inp):
    a_t, d, v, r = inp
    if r is not None:
      dh = jnp.where(r[:, None], dh_reset, dh)
    dh_new = d * (a_t + (dh.astype(cdt) @ w_h).astype(sdt))
    if v is not None:
      dh_new = jnp.where(v[:, None], dh_new, dh)
    return dh_new, dh_new

  dh, dhs = lax.scan(step, dh0, (a, D, valid, resets), unroll=unroll)
  return dhs, dh


def _backward(coefs, cts, *, unroll):
  """The transpose of :func:`_tangent`: the backward loop, carrying only ``dh``.

  ``cts = (d_hs (T, B, H), d_hT)``; returns ``(dz (T, B, H), dh0, dh_reset)``, ``dz`` the gradient of the
  pre-activations, from which the weight gradients are GEMMs over all ``T * B`` rows.
  """
  w_h, D, valid, resets = coefs
  d_hs, d_hT = cts
  T = D.shape[0]
  sdt, cdt = d_hT.dtype, w_h.dtype
  w_hT = w_h.T  # transposed once outside the loop

  def body(k, carry):
    dh, buf, acc = carry
    t = T - 1 - k
    at = functools.partial(lax.dynamic_index_in_dim, index=t, axis=0, keepdims=False)
    dh = dh + at(d_hs)
    if valid is not None:
      vv = at(valid)[:, None]
      dh_skip, dh = jnp.where(vv, 0, dh), jnp.where(vv, dh, 0)
    dz = at(buf) * dh
    dh_prev = (dz.astype(cdt) @ w_hT).astype(sdt)
    if valid is not None:
      dh_prev = dh_prev + dh_skip
    if resets is not None:
      rr = at(resets)[:, None]
      acc, dh_prev = acc + jnp.where(rr, dh_prev, 0), jnp.where(rr, 0, dh_prev)
    # dz[t] overwrites D[t], its only reader.
    return dh_prev, lax.dynamic_update_index_in_dim(buf, dz, t, 0), acc

  acc = None if resets is None else jnp.zeros_like(d_hT)
  dh0, dz, acc = lax.fori_loop(0, T, body, (d_hT, D, acc), unroll=unroll)
  return dz, dh0, acc


_recurrence = linear_recurrence("rnn_fused_tangent", _tangent, _backward)


def _tangent_rows(valid, resets):
  """The batch axis of each leaf of :func:`_tangent`'s coefficients, linear inputs and outputs (for ``vmap``)."""
  coef_rows = (None, 1) + (() if valid is None else (1,)) + (() if resets is None else (1,))
  return coef_rows, (1, 0) + (() if resets is None else (0,)), (1, 0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(8, 9))
def _layer(w_x, b, w_h, xs, valid, resets, h0, h_reset, relu, unroll):
  """``(hs (T, B, H), h_T)`` on time-major ``xs (T, B, I)`` from ``h0``; ``hs`` is the carried ``h``.

  ``h_reset`` is where a reset step starts (``None`` without resets): the layer's initial state, which
  under ``remat`` differs from a chunk's ``h0``.
  """
  h, hs = _forward(w_x, b, w_h, xs, valid, resets, h0, h_reset, relu, unroll, save=False)
  return hs, h


@functools.partial(_layer.defjvp, symbolic_zeros=True)
def _layer_jvp(relu, unroll, primals, tangents):
  # The forward loop saves each step's D; the tangent is the hoisted GEMMs (input and weight tangents over all
  # T * B rows) plus the linear recurrence, whose transpose is the backward loop.
  w_x, b, w_h, xs, valid, resets, h0, h_reset = primals
  dw_x, db, dw_h, dxs, _, _, dh0, dh_reset = tangents
  h, (D, hs) = _forward(w_x, b, w_h, xs, valid, resets, h0, h_reset, relu, unroll, save=True)
  T, B, _ = xs.shape
  H = h0.shape[-1]
  sdt = h0.dtype
  mm = functools.partial(jnp.matmul, preferred_element_type=sdt)  # float32 sums under 16-bit params
  terms = []
  if not is_zero(dxs):
    terms.append(mm(dxs.reshape(T * B, xs.shape[-1]).astype(w_x.dtype), w_x))
  if not is_zero(dw_x):
    terms.append(mm(xs.reshape(T * B, xs.shape[-1]), dw_x))
  if not is_zero(dw_h):
    # Each step's starting carry: h0, the previous step's carry, or h_reset at a reset step.
    h_prevs = step_starts(hs, h0, resets, h_reset)
    terms.append(mm(h_prevs.reshape(T * B, H).astype(w_h.dtype), dw_h))
  a = functools.reduce(jnp.add, terms) if terms else jnp.zeros((T * B, H), sdt)
  a = a.reshape(T, B, H)
  if not is_zero(db):
    a = a + db.astype(sdt)
  dh0 = jnp.zeros_like(h0) if is_zero(dh0) else dh0
  if resets is not None:
    dh_reset = jnp.zeros_like(h0) if is_zero(dh_reset) else dh_reset
  else:
    dh_reset = None
  coefs = (w_h, D, valid, resets)
  d_hs, d_h = _recurrence(coefs, (a, dh0, dh_reset), rows=_tangent_rows(valid, resets), unroll=unroll)
  return (hs, h), (d_hs, d_h)


def _run(params, xs, valid, resets, h0, h_reset, unroll):
  """The layer on time-major ``xs (T, B, I)``; returns ``(hs (T, B, H), h_T)``, ``hs`` unmasked."""
  xs = xs.astype(params.w_x.dtype)
  h_reset = None if resets is None else h_reset
  relu = params.activation == "relu"
  return _layer(params.w_x, params.b, params.w_h, xs, valid, resets, h0, h_reset, relu, unroll)


def run(
  params: RNNParams,
  xs: jax.Array,
  state: RNNState,
  valid,
  resets=None,
  *,
  lengths=None,
  unroll: int | bool | None = None,
  remat: int | None = None,
) -> tuple[RNNState, jax.Array]:
  """The kernel's core: one Elman RNN layer on time-major ``xs (T, B, I)``, state ``h (B, H)``.

  Args:
    params: :class:`~jaxlstm.RNNParams`, tanh or relu.
    xs: inputs ``(T, B, I)`` in processing order.
    state: :class:`~jaxlstm.RNNState` with ``h (B, H)`` in the carry dtype
      (float32 under 16-bit params).
    valid: ``(T, B)`` bool validity, or ``None``.
    resets: ``(T, B)`` bool, or ``None``: a reset step starts again from ``state``.
    lengths: unused; validity arrives in ``valid``.
    unroll: unroll factor of the forward and backward loops; ``None`` picks
      :func:`jaxlstm.kernels.fused.default_unroll`.
    remat: if set, checkpoint every ``remat`` steps, recomputing each chunk
      during the backward pass.

  Returns:
    ``(final_state, hs)``; ``hs (T, B, H)`` in the carry dtype (the carried
    ``h``, which the shell zeroes at invalid steps).

  Example:
    The core on time-major inputs, held to the reference kernel, its oracle:

    >>> from jaxlstm.kernels import fused_rnn, reference
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 5, activation="relu")
    >>> xs, state0 = jnp.ones((7, 2, 3)), jaxlstm.zero_state(params, (2,))
    >>> state, hs = fused_rnn.run(params, xs, state0, None)
    >>> hs.shape, state.h.shape
    ((7, 2, 5), (2, 5))
    >>> bool(jnp.allclose(hs, reference.run(params, xs, state0, None, None)[1], atol=1e-6))
    True
  """
  del lengths
  if unroll is None:
    unroll = default_unroll()
  if remat is None:
    hs, h = _run(params, xs, valid, resets, state.h, state.h, unroll)
  else:
    # A reset inside a chunk starts from the layer's initial state, not from the chunk's first carry.
    core = lambda x, v, r, h: _run(params, x, v, r, h, state.h, unroll)
    hs, h = remat_chunks(core, xs, valid, resets, state.h, remat)
  return RNNState(h), hs


KERNEL = Kernel(name="fused_rnn", why_not=why_not, run=run, rank=12)
