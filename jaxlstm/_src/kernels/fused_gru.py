r"""The fast GRU layer: a hoisted input GEMM, one recurrent GEMM per step, and a hand-written backward pass.

:func:`run` computes exactly what the reference path (:func:`jaxlstm.scan`
over :func:`jaxlstm.gru_step`, PyTorch's semantics, gates r, z, n) computes,
with lengths, masks, resets and reversal, organized as the fused LSTM kernel
(:mod:`~jaxlstm.kernels.fused`) is for XLA's CPU backend:

1. The input projection of all ``T`` steps is one GEMM before the loop,
   ``zx = xs @ w_x (T, B, 3H)``. Only ``h @ w_h (B, 3H)`` stays in the loop,
   with the biases, which fuse into the gates; ``b_hn`` stays inside the
   reset product.
2. ``r`` and ``z`` share one ``tanh``: ``sigmoid(v) = 0.5 * tanh(v / 2) + 0.5``.
3. The layer is a :func:`jax.custom_jvp` whose tangent is a linear
   recurrence with a hand-written transpose (:mod:`~jaxlstm.kernels.linear`),
   so ``grad``, ``jvp``, ``jacfwd``, ``hessian`` and ``vmap`` all work and
   reverse mode runs the fast backward loop. With ``hn = h W_hn + b_hn`` and
   the factors that the forward loop saves,

   .. math::

     P_n = (1 - z)(1 - n^2), \quad P_r = P_n\, hn\, r (1 - r), \quad
     P_z = (h - n)\, z (1 - z), \quad Q = P_n\, r,

   the tangent of one step is

   .. math::

     g = dh\, W_h + a, \qquad
     dh' = P_r g_r + P_z g_z + Q g_n + P_n a'_n + z\, dh,

   where ``a (B, 3H)`` holds the hoisted tangents that add to ``h W_h``
   (``h dW_h``, ``db_hn``, and the input side of ``r`` and ``z``) and
   ``a'_n (B, H)`` the input side of ``n``, which the reset gate does not
   multiply. Its transpose, the backward step, is ``g^* = [P_r, P_z, Q] dh'``
   (the gradient of ``h W_h + b``, and the GEMM's input),
   ``a'^*_n = P_n dh'`` and ``dh = g^* W_h^T + z dh'``: two small fusions
   and one GEMM. The weight gradients are GEMMs over all ``T * B`` rows after
   the loop; the input side of all three gates is one tangent ``x dW_x``
   (``3H`` columns), so that ``dW_x`` and ``dxs`` are one such GEMM each.
4. The forward loop writes ``[P_r, P_z, Q]`` over ``zx`` and the backward
   loop writes ``g^*`` over them: no ``(T, B, 3H)`` array is allocated after
   the input projection (fresh memory costs page faults on CPU).
5. ``remat=k`` runs the sequence in chunks of ``k`` steps under
   :func:`jax.checkpoint`, as the fused LSTM kernel does, resets included.

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

from jaxlstm._src.cells.gru import GRUParams, GRUState
from jaxlstm._src.kernels.chunks import is_zero, project_in_chunks, project_steps, remat_chunks, step_starts
from jaxlstm._src.kernels.fused import default_unroll
from jaxlstm._src.kernels.linear import linear_recurrence, reference_jvp
from jaxlstm._src.kernels.registry import Kernel, LayerCall


def why_not(call: LayerCall) -> str | None:
  """Why the fused GRU kernel cannot run ``call``, or ``None``.

  It runs every :class:`~jaxlstm.GRUParams`, in any floating dtype, with
  ``lengths``, ``mask``, ``resets``, ``reverse`` and ``remat``.

  Example:
    >>> from jaxlstm.kernels import fused_gru
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("gru"), params=params, lengths=True, mask=True,
    ...                          resets=True, reverse=True, time_major=False, remat=4)
    >>> fused_gru.why_not(call) is None
    True
    >>> fused_gru.why_not(call._replace(cell=jaxlstm.get_cell("lstm")))
    'it runs GRU layers only, not lstm'
  """
  if call.cell.name != "gru":
    return f"it runs GRU layers only, not {call.cell.name}"
  return None


def _step(w_h, b_rz, b_n, b_hn, h_reset, h, inputs, *, save):
  """One step on the precomputed projection ``zx (B, 3H)``; a reset step starts from ``h_reset``.

  Returns the new carry and ``h``, or with ``save`` the new carry and ``(((P_r, P_z, Q), P_n, z), h)``.
  """
  zx, v, rs = inputs
  if rs is not None:
    h = jnp.where(rs[:, None], h_reset, h)
  H = h.shape[-1]
  zh = (h.astype(w_h.dtype) @ w_h).astype(h.dtype)  # (B, 3H)
  # One tanh for both sigmoid gates.
  rz = 0.5 * jnp.tanh(0.5 * (zx[:, : 2 * H] + b_rz + zh[:, : 2 * H])) + 0.5
  r, z = rz[:, :H], rz[:, H:]
  hn = zh[:, 2 * H :] + b_hn
  n = jnp.tanh(zx[:, 2 * H :] + b_n + r * hn)
  h_new = n + z * (h - n)
  factors = None
  if save:
    # Factors at invalid steps are never used: the backward pass zeroes the gradient there.
    p_n = (1 - z) * (1 - n * n)
    factors = ((p_n * hn * (r - r * r), (h - n) * (z - z * z), p_n * r), p_n, z)
  if v is not None:
    h_new = jnp.where(v[:, None], h_new, h)
  return h_new, ((factors, h_new) if save else h_new)


def _forward(w_x, b, w_h, b_hn, xs, valid, resets, h0, h_reset, unroll, save):
  sdt = h0.dtype
  T, B, _ = xs.shape
  H = h0.shape[-1]
  b = b.astype(sdt)
  step = functools.partial(_step, w_h, b[: 2 * H], b[2 * H :], b_hn.astype(sdt), h_reset, save=save)
  at = functools.partial(lax.dynamic_index_in_dim, axis=0, keepdims=False)
  put = functools.partial(lax.dynamic_update_index_in_dim, axis=0)

  project = functools.partial(project_steps, w_x=w_x, dtype=sdt)  # a run of steps in one GEMM, outside the loop

  # Each step reads zx[t] from the loop carry, fetched by the step before: on XLA's CPU backend an elementwise
  # fusion that slices zx itself runs several times slower than one that reads a plain (B, 3H) array.
  if not save:

    def run(zx, rest, h):
      K = zx.shape[0]
      v, rs = rest

      def run_step(t, carry):
        h, z, hs = carry
        z_next = at(zx, jnp.minimum(t + 1, K - 1))
        h, h_out = step(h, (z, None if v is None else at(v, t), None if rs is None else at(rs, t)))
        return h, z_next, put(hs, h_out, t)

      h, _, hs = lax.fori_loop(0, K, run_step, (h, zx[0], jnp.zeros((K, B, H), sdt)), unroll=unroll)
      return h, hs

    return project_in_chunks(run, project, xs, (valid, resets), h0)

  zx = project(xs)
  flags = lambda t: (None if valid is None else at(valid, t), None if resets is None else at(resets, t))  # noqa: E731
  zeros = jnp.zeros((T, B, H), sdt)

  # Training saves each step's factors while its gates are at hand, [P_r, P_z, Q] over zx[t] (whose value the
  # carry holds by then), so that no fresh (T, B, 3H) buffer is touched.
  def body(t, carry):
    h, z, F3, P_n, Z, hs = carry
    h, ((f3, p_n, zg), h_out) = step(h, (z, *flags(t)))
    # The gate blocks go straight into their columns, which XLA's CPU backend does faster than a concatenate.
    for k, block in enumerate(f3):
      F3 = lax.dynamic_update_slice(F3, block[None], (t, 0, k * H))
    # zx[t + 1] is read after the writes at t, from the written buffer: a read before them, of the buffer being
    # written in place, XLA could only make safe by copying the whole buffer.
    z_next = at(F3, jnp.minimum(t + 1, T - 1))
    return h, z_next, F3, put(P_n, p_n, t), put(Z, zg, t), put(hs, h_out, t)

  h, _, F3, P_n, Z, hs = lax.fori_loop(0, T, body, (h0, zx[0], zx, zeros, zeros, zeros), unroll=unroll)
  return h, (F3, P_n, Z, hs)


def _tangent(coefs, lins, *, unroll):
  """The tangent recurrence, linear in ``lins = (a, a_n, dh0, dh_reset)``; the transpose of :func:`_backward`.

  ``coefs = (w_h, F3, P_n, Z, valid, resets)`` as saved by the forward loop (``F3 = [P_r, P_z, Q]``);
  ``a (T, B, 3H)`` and ``a_n (T, B, H)`` are the hoisted tangents (see the module docstring). A reset step
  starts from ``dh_reset``. Returns ``(dhs (T, B, H), dh_T)``.
  """
  w_h, F3, P_n, Z, valid, resets = coefs
  a, a_n, dh0, dh_reset = lins
  H = dh0.shape[-1]
  sdt, cdt = dh0.dtype, w_h.dtype

  def step(dh, inp):
    a_t, an_t, f3, p_n, z, v, r = inp
    if r is not None:
      dh = jnp.where(r[:, None], dh_reset, dh)
    fg = f3 * (a_t + (dh.astype(cdt) @ w_h).astype(sdt))  # (B, 3H)
    dh_new = fg[:, :H] + fg[:, H : 2 * H] + fg[:, 2 * H :] + p_n * an_t + z * dh
    if v is not None:
      dh_new = jnp.where(v[:, None], dh_new, dh)
    return dh_new, dh_new

  dh, dhs = lax.scan(step, dh0, (a, a_n, F3, P_n, Z, valid, resets), unroll=unroll)
  return dhs, dh


def _backward(coefs, cts, *, unroll):
  """The transpose of :func:`_tangent`: the layer's backward loop, carrying only ``dh``.

  ``cts = (d_hs (T, B, H), d_hT)``; returns ``(g (T, B, 3H), g_n (T, B, H), dh0, dh_reset)``: the gradients
  of ``h W_h + b`` and of the input side of ``n``, from which the weight gradients are GEMMs over all
  ``T * B`` rows. The gradient reaching a reset step's starting state goes to ``dh_reset``.
  """
  w_h, F3, P_n, Z, valid, resets = coefs
  d_hs, d_hT = cts
  T = F3.shape[0]
  sdt, cdt = d_hT.dtype, w_h.dtype
  w_hT = w_h.T  # (3H, H), transposed once outside the loop

  def body(k, carry):
    dh, F3, P_n, acc = carry
    t = T - 1 - k
    at = functools.partial(lax.dynamic_index_in_dim, index=t, axis=0, keepdims=False)
    dh = dh + at(d_hs)
    if valid is not None:
      vv = at(valid)[:, None]
      dh_skip, dh = jnp.where(vv, 0, dh), jnp.where(vv, dh, 0)
    g = at(F3) * jnp.concatenate([dh, dh, dh], axis=-1)  # (B, 3H)
    dh_prev = (g.astype(cdt) @ w_hT).astype(sdt) + at(Z) * dh
    if valid is not None:
      dh_prev = dh_prev + dh_skip
    if resets is not None:
      rr = at(resets)[:, None]
      acc, dh_prev = acc + jnp.where(rr, dh_prev, 0), jnp.where(rr, 0, dh_prev)
    # g[t] overwrites F3[t] and g_n[t] P_n[t], their only readers: the loop needs no new buffers. The GEMM's
    # input is what is stored, so that XLA reads F3[t] once, before the write.
    put = functools.partial(lax.dynamic_update_index_in_dim, index=t, axis=0)
    return dh_prev, put(F3, g), put(P_n, at(P_n) * dh), acc

  acc = None if resets is None else jnp.zeros_like(d_hT)
  dh0, g, g_n, acc = lax.fori_loop(0, T, body, (d_hT, F3, P_n, acc), unroll=unroll)
  return g, g_n, dh0, acc


_recurrence = linear_recurrence("gru_fused_tangent", _tangent, _backward)


def _tangent_rows(valid, resets):
  """The batch axis of each leaf of :func:`_tangent`'s coefficients, linear inputs and outputs (for ``vmap``)."""
  coef_rows = (None, 1, 1, 1) + (() if valid is None else (1,)) + (() if resets is None else (1,))
  lin_rows = (1, 1, 0) + (() if resets is None else (0,))
  return coef_rows, lin_rows, (1, 0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(9,))
def _layer(w_x, b, w_h, b_hn, xs, valid, resets, h0, h_reset, unroll):
  """``(hs (T, B, H), h_T)`` on time-major ``xs (T, B, I)`` from ``h0``; ``hs`` is the carried ``h``.

  ``h_reset`` is where a reset step starts (``None`` without resets): the layer's initial state, which
  under ``remat`` differs from a chunk's ``h0``.
  """
  h, hs = _forward(w_x, b, w_h, b_hn, xs, valid, resets, h0, h_reset, unroll, save=False)
  return hs, h


def _sum(terms, shape, dtype):
  return functools.reduce(jnp.add, terms) if terms else jnp.zeros(shape, dtype)


def _tangent_of(recurrence, saved, primals, tangents, unroll):
  """The layer's tangent from the forward loop's ``saved = (h_T, (F3, P_n, Z, hs))``: the hoisted GEMMs
  (input and weight tangents over all ``T * B`` rows) plus the linear recurrence, whose transpose is the
  backward loop."""
  w_x, b, w_h, b_hn, xs, valid, resets, h0, h_reset = primals
  dw_x, db, dw_h, db_hn, dxs, _, _, dh0, dh_reset = tangents
  h, (F3, P_n, Z, hs) = saved
  T, B, _ = xs.shape
  H = h0.shape[-1]
  sdt = h0.dtype
  mm = functools.partial(jnp.matmul, preferred_element_type=sdt)  # float32 sums under 16-bit params
  x2 = xs.reshape(T * B, xs.shape[-1])
  # The input side of all three gates is one GEMM on whole arrays, ax; its r, z columns join a, its n columns
  # are a_n. Reverse mode joins their cotangents into one (T * B, 3H) array (a cheap elementwise fusion) for
  # one GEMM each for dw_x and dxs: as two GEMMs (w_x masked to r, z and sliced to n) they summed over 4H
  # columns, and M-sized training (B=64, T=256, I=64, H=256, 2 layers) ran 3-7 % slower on this 2-core CPU.
  ax = []
  if not is_zero(dxs):
    ax.append(mm(dxs.reshape(T * B, xs.shape[-1]).astype(w_x.dtype), w_x))
  if not is_zero(dw_x):
    ax.append(mm(x2, dw_x))
  a = []
  if not is_zero(dw_h):
    # Each step's starting carry: h0, the previous step's carry, or h_reset at a reset step.
    h_prevs = step_starts(hs, h0, resets, h_reset)
    a.append(mm(h_prevs.reshape(T * B, H).astype(w_h.dtype), dw_h))
  ax = _sum(ax, (T * B, 3 * H), sdt).reshape(T, B, 3 * H)
  if not is_zero(db):
    ax = ax + db.astype(sdt)
  a = _sum(a, (T * B, 3 * H), sdt).reshape(T, B, 3 * H)
  if not is_zero(db_hn):
    a = a + jnp.concatenate([jnp.zeros((2 * H,), sdt), db_hn.astype(sdt)])
  # Sliced and padded rather than masked by a (3H,) product, which XLA would broadcast to (T, B, 3H).
  a = a + jnp.concatenate([ax[..., : 2 * H], jnp.zeros((T, B, H), sdt)], axis=-1)
  a_n = ax[..., 2 * H :]
  dh0 = jnp.zeros_like(h0) if is_zero(dh0) else dh0
  if resets is not None:
    dh_reset = jnp.zeros_like(h0) if is_zero(dh_reset) else dh_reset
  else:
    dh_reset = None
  coefs = (w_h, F3, P_n, Z, valid, resets)
  d_hs, d_h = recurrence(coefs, (a, a_n, dh0, dh_reset), rows=_tangent_rows(valid, resets), unroll=unroll)
  return (hs, h), (d_hs, d_h)


@functools.partial(_layer.defjvp, symbolic_zeros=True)
def _layer_jvp(unroll, primals, tangents):
  w_x, b, w_h, b_hn, xs, valid, resets, h0, h_reset = primals
  saved = _forward(w_x, b, w_h, b_hn, xs, valid, resets, h0, h_reset, unroll, save=True)
  return _tangent_of(_recurrence, saved, primals, tangents, unroll)


def kernel_layer(
  name: str, run_loop: Callable, run_loop_saved: Callable | None, run_backward: Callable | None
) -> Callable:
  """A GRU layer on another kernel's two loops, with this kernel's tangent, forward mode and XLA fallbacks.

  The GRU counterpart of :func:`jaxlstm.kernels.fused.kernel_layer`, for a kernel that runs this kernel's
  forward and backward loops in its own code (native, Pallas), over the same saved factors:

  * ``run_loop(w_x, b, w_h, b_hn, xs, valid, h0) -> (hs, h_T)``: the forward loop;
  * ``run_loop_saved(...)`` (same arguments) ``-> (h_T, (F3, P_n, Z, hs))``: the training forward;
  * ``run_backward(w_h, F3, P_n, Z, valid, d_hs, d_hT) -> (g, g_n, dh0)``: the backward loop.

  ``run_loop_saved=None`` and ``run_backward=None`` train on this kernel's own XLA loops: a kernel whose
  forward loop alone is faster than this kernel's.

  Returns ``layer(w_x, b, w_h, b_hn, xs, valid, h0) -> (hs, h_T)``, a :func:`jax.custom_jvp`: reverse mode
  runs ``run_backward``, forward mode this kernel's tangent loop; second-order autodiff goes through this
  kernel's XLA loops (:func:`~jaxlstm._src.kernels.linear.reference_jvp`). Resets are not passed.
  """

  def xla_saved(w_x, b, w_h, b_hn, xs, valid, h0):
    return _forward(w_x, b, w_h, b_hn, xs, valid, None, h0, None, 1, save=True)

  def xla_backward(coefs, cts):
    return _backward(coefs, cts, unroll=1)[:3]

  saved_call = xla_saved if run_loop_saved is None else reference_jvp(run_loop_saved, xla_saved)
  backward_call = (
    xla_backward
    if run_backward is None
    else reference_jvp(lambda coefs, cts: tuple(run_backward(*coefs[:5], *cts)), xla_backward)
  )
  # The backward loop's fourth output, the gradient of a reset step's start, is None without resets.
  recurrence = linear_recurrence(name, _tangent, lambda coefs, cts, *, unroll: (*backward_call(coefs, cts), None))

  @jax.custom_jvp
  def layer(w_x, b, w_h, b_hn, xs, valid, h0):
    return run_loop(w_x, b, w_h, b_hn, xs, valid, h0)

  @functools.partial(layer.defjvp, symbolic_zeros=True)
  def _(primals, tangents):
    w_x, b, w_h, b_hn, xs, valid, h0 = primals
    dw_x, db, dw_h, db_hn, dxs, dv, dh0 = tangents
    saved = saved_call(*primals)
    full = (w_x, b, w_h, b_hn, xs, valid, None, h0, None)
    return _tangent_of(recurrence, saved, full, (dw_x, db, dw_h, db_hn, dxs, dv, None, dh0, None), default_unroll())

  return layer


def _run(params, xs, valid, resets, h0, h_reset, unroll):
  """The layer on time-major ``xs (T, B, I)``; returns ``(hs (T, B, H), h_T)``, ``hs`` unmasked."""
  xs = xs.astype(params.w_x.dtype)
  h_reset = None if resets is None else h_reset
  return _layer(params.w_x, params.b, params.w_h, params.b_hn, xs, valid, resets, h0, h_reset, unroll)


def run(
  params: GRUParams,
  xs: jax.Array,
  state: GRUState,
  valid,
  resets=None,
  *,
  lengths=None,
  unroll: int | bool | None = None,
  remat: int | None = None,
) -> tuple[GRUState, jax.Array]:
  """The kernel's core: one GRU layer on time-major ``xs (T, B, I)``, state ``h (B, H)``.

  Args:
    params: :class:`~jaxlstm.GRUParams`.
    xs: inputs ``(T, B, I)`` in processing order.
    state: :class:`~jaxlstm.GRUState` with ``h (B, H)`` in the carry dtype
      (float32 under 16-bit params).
    valid: ``(T, B)`` bool validity, or ``None``.
    resets: ``(T, B)`` bool, or ``None``: a reset step starts again from ``state``.
    lengths: unused; validity arrives in ``valid``.
    unroll: unroll factor of the forward and backward loops; ``None`` picks
      :func:`jaxlstm.kernels.fused.default_unroll`.
    remat: if set, checkpoint every ``remat`` steps: the backward pass
      recomputes each chunk's gates, trading about one extra forward pass for
      memory that no longer holds gate-sized arrays for all ``T`` steps.

  Returns:
    ``(final_state, hs)``; ``hs (T, B, H)`` in the carry dtype (the carried
    ``h``, which the shell zeroes at invalid steps).

  Example:
    The core on time-major inputs, held to the reference kernel, its oracle:

    >>> from jaxlstm.kernels import fused_gru, reference
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> xs, state0 = jnp.ones((7, 2, 3)), jaxlstm.zero_state(params, (2,))
    >>> resets = jnp.zeros((7, 2), bool).at[4, 1].set(True)  # row 1 starts again at step 4
    >>> state, hs = fused_gru.run(params, xs, state0, None, resets)
    >>> hs.shape, state.h.shape
    ((7, 2, 5), (2, 5))
    >>> bool(jnp.allclose(hs, reference.run(params, xs, state0, None, resets)[1], atol=1e-6))
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
  return GRUState(h), hs


KERNEL = Kernel(name="fused_gru", why_not=why_not, run=run, rank=11)
