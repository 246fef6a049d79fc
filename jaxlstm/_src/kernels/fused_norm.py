r"""The fused LSTM layer with layer normalization and projection: the loops of :mod:`~jaxlstm.kernels.fused` for
LayerNorm LSTMs (Ba et al., 2016) and projected LSTMs (Sak et al., 2014), with or without peepholes.

The fused kernel runs a layer here when its params have ``layer_norm`` or
``w_proj``. The organization is the plain path's:

1. Everything that does not depend on ``h`` leaves the loop: the input
   projection and its normalization, ``X = LN(xs @ w_x) * s_x + b``, is plain
   JAX over all ``T * B`` rows (JAX differentiates it, as big GEMMs).
2. The loop carries ``(h, c)`` and does per step one ``(B, P) x (P, 4H)`` GEMM,
   the normalization of that row, the gates, the normalization of ``c``, and
   with a projection one ``(B, H) x (H, P)`` GEMM.
3. The layer is a :func:`jax.custom_jvp`. While the forward loop has a step at
   hand it saves the step's activation derivatives and normalization
   statistics; the tangent of the layer is then hoisted terms (the weight and
   gain tangents, as GEMMs and products over all rows) plus a recurrence
   linear in the carried tangents, whose transpose, the backward loop, is
   written by hand (:func:`_backward`). So reverse mode costs one backward
   loop of two GEMMs per step, and the weight gradients are GEMMs after it.

The step, with ``LN(v) = (v - mean v) / sqrt(var v + eps)`` over the row:

.. code-block:: text

  u = h_{t-1} @ W_h                      n = LN(u), r = 1 / sqrt(var u + eps)
  z = X_t + n * s_h  (+ p_i c_{t-1}, p_f c_{t-1} on the i, f blocks)
  c = f c_{t-1} + i g                    nc = LN(c), rc = 1 / sqrt(var c + eps)
  o = sigmoid(z_o + p_o c)
  y = o * tanh(nc * s_c + b_c)           h = y @ W_p   (or h = y without a projection)

Without ``layer_norm`` the two normalizations are the identity. The layer
shell hands it time-major ``(T, B, F)`` arrays, with all batch axes flattened
into one and a backward pass already reversed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxlstm._src.cells.lstm import LAYER_NORM_EPS, LSTMParams, layer_norm
from jaxlstm._src.kernels.chunks import gate_consts, is_zero, project_in_chunks, step_starts
from jaxlstm._src.kernels.linear import linear_recurrence, reference_jvp


def _norm(v):
  """``(LN(v), 1 / sqrt(var + eps))`` over the last axis; the second is ``(B, 1)``."""
  m = jnp.mean(v, axis=-1, keepdims=True)
  d = v - m
  r = lax.rsqrt(jnp.mean(d * d, axis=-1, keepdims=True) + LAYER_NORM_EPS)
  return d * r, r


def _norm_tangent(dv, n, r, s):
  """The tangent of ``LN(v) * s`` at ``v`` (``n = LN(v)``, ``r`` its inverse deviation) along ``dv``."""
  return s * r * (dv - jnp.mean(dv, axis=-1, keepdims=True) - n * jnp.mean(n * dv, axis=-1, keepdims=True))


def _norm_transpose(g, n, r, s):
  """The transpose of :func:`_norm_tangent` applied to ``g``: the projection is symmetric, the gain on its left."""
  w = s * g
  return r * (w - jnp.mean(w, axis=-1, keepdims=True) - n * jnp.mean(n * w, axis=-1, keepdims=True))


class _Weights:
  """The loop's weights in the state dtype, each ``None`` when the layer lacks it (static structure)."""

  def __init__(self, w_h, s_h, peep, s_c, b_c, w_p, sdt):
    self.w_h, self.w_p = w_h, w_p  # GEMM operands stay in the params' dtype
    cast = lambda a: None if a is None else a.astype(sdt)
    self.s_h, self.peep, self.s_c, self.b_c = cast(s_h), cast(peep), cast(s_c), cast(b_c)
    self.consts = gate_consts(w_h.shape[-1] // 4, sdt)


def _step(w: _Weights, state0, carry, inputs, *, save):
  """One step on precomputed ``X_t``; a reset step starts from ``state0``. Returns the carry and, with ``save``,
  the step's factors and carried values; without, ``h``."""
  x_t, v, rs = inputs
  if rs is not None:
    rr = rs[:, None]
    carry = (jnp.where(rr, state0[0], carry[0]), jnp.where(rr, state0[1], carry[1]))
  h, c_prev = carry
  sdt = c_prev.dtype
  H = c_prev.shape[-1]
  u = (h.astype(w.w_h.dtype) @ w.w_h).astype(sdt)  # (B, 4H)
  n = r = None
  if w.s_h is not None:
    n, r = _norm(u)
    u = n * w.s_h
  z = x_t + u
  scale, add = w.consts
  # One tanh over the gate block (sigmoid(z) = 0.5 tanh(z / 2) + 0.5), as in the plain path: on XLA's CPU
  # backend one fusion over (B, 4H) runs much faster per step than four over its slices.
  if w.peep is None:
    a = jnp.tanh(z * scale) * scale + add
    i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
    c = f * c_prev + i * g
  else:
    pc = jnp.concatenate([w.peep[0] * c_prev, w.peep[1] * c_prev, jnp.zeros_like(c_prev)], axis=-1)
    a3 = jnp.tanh((z[:, : 3 * H] + pc) * scale[: 3 * H]) * scale[: 3 * H] + add[: 3 * H]
    i, f, g = a3[:, :H], a3[:, H : 2 * H], a3[:, 2 * H :]
    c = f * c_prev + i * g
    o = 0.5 * jnp.tanh(0.5 * (z[:, 3 * H :] + w.peep[2] * c)) + 0.5
  nc = rc = None
  c_hat = c
  if w.s_c is not None:
    nc, rc = _norm(c)
    c_hat = nc * w.s_c + w.b_c
  tc = jnp.tanh(c_hat)
  y = o * tc
  h_new = y if w.w_p is None else (y.astype(w.w_p.dtype) @ w.w_p).astype(sdt)
  factors = None
  if save:
    d_i, d_f, d_o = i * (1 - i), f * (1 - f), o * (1 - o)
    P = (g * d_i, c_prev * d_f, i * (1 - g * g), tc * d_o)
    F = f
    if w.peep is not None:
      F = F + P[0] * w.peep[0] + P[1] * w.peep[1]
    factors = (P, F, o * (1 - tc * tc), n, r, nc, rc, y)
  if v is not None:
    vv = v[:, None]
    h_new = jnp.where(vv, h_new, h)
    c = jnp.where(vv, c, c_prev)
  return (h_new, c), ((factors, h_new, c) if save else h_new)


def _project(xs, w_x, s_x, b, sdt):
  """``X = LN(xs @ w_x) * s_x + b`` (without ``s_x``, ``xs @ w_x + b``) for inputs ``(..., I)``, in ``sdt``."""
  zx = (xs.reshape(-1, xs.shape[-1]) @ w_x).reshape(*xs.shape[:-1], w_x.shape[-1])
  if s_x is not None:
    zx = layer_norm(zx, s_x)
  return (zx + b).astype(sdt)


def _forward(w: _Weights, src, valid, resets, h0, c0, unroll, save, project=None, carry=None):
  """The loop: ``((h_T, c_T), hs)``, or with ``save`` also every step's factors.

  ``src`` is ``X (T, B, 4H)``, or with ``project`` the inputs ``xs (T, B, I)``, projected step by step. A reset
  step starts from ``(h0, c0)``; without ``save`` the loop may start from another ``carry`` (a later chunk's).
  """
  step_x = functools.partial(_step, w, (h0, c0), save=save)
  step = step_x if project is None else (lambda carry, inp: step_x(carry, (project(inp[0]), *inp[1:])))
  if not save:
    return lax.scan(step, (h0, c0) if carry is None else carry, (src, valid, resets), unroll=unroll)
  T, B = src.shape[:2]
  H, Pd = c0.shape[-1], h0.shape[-1]
  sdt = c0.dtype
  ln = w.s_h is not None

  def body(t, carry):
    h, c, bufs = carry
    at = functools.partial(lax.dynamic_index_in_dim, index=t, axis=0, keepdims=False)
    x_t = at(bufs["P"] if project is None else src)
    inputs = (x_t, None if valid is None else at(valid), None if resets is None else at(resets))
    (h, c), ((P, F, R, n, r, nc, rc, y), h_out, c_out) = step((h, c), inputs)
    put = lambda buf, val: lax.dynamic_update_index_in_dim(buf, val, t, 0)
    new = dict(bufs)
    # P's gate blocks are written over X[t], its only reader, as in the plain path.
    for k, block in enumerate(P):
      new["P"] = lax.dynamic_update_slice(new["P"], block[None], (t, 0, k * H))
    for key, val in (("F", F), ("R", R), ("hs", h_out), ("cs", c_out), ("n", n), ("r", r), ("nc", nc), ("rc", rc)):
      if key in bufs:
        new[key] = put(bufs[key], val)
    if w.w_p is not None:
      new["y"] = put(bufs["y"], y)
    return h, c, new

  zeros = lambda *shape: jnp.zeros(shape, sdt)
  P0 = src if project is None else zeros(T, B, 4 * H)
  bufs = {"P": P0, "F": zeros(T, B, H), "R": zeros(T, B, H), "hs": zeros(T, B, Pd)}
  if w.peep is not None:  # only the peephole gradient reads c
    bufs["cs"] = zeros(T, B, H)
  if ln:
    bufs.update(n=zeros(T, B, 4 * H), r=zeros(T, B, 1), nc=zeros(T, B, H), rc=zeros(T, B, 1))
  if w.w_p is not None:
    bufs["y"] = zeros(T, B, H)
  h, c, bufs = lax.fori_loop(0, T, body, (h0, c0, bufs), unroll=unroll)
  return (h, c), bufs


def _tangent(coefs, lins, *, unroll):
  """The layer's tangent recurrence, linear in ``lins = (V, A, E, G, dh0, dc0)``; the transpose of :func:`_backward`.

  ``V (T, B, 4H)`` adds to the gate pre-activations, ``A (T, B, 4H)`` to ``h_{t-1} @ W_h`` before its
  normalization, ``E (T, B, H)`` to the normalized cell state and ``G (T, B, P)`` to ``h`` (``None`` where the
  layer lacks the term). Returns ``(dhs (T, B, P), dh_T, dc_T)``.
  """
  w_h, s_h, peep, s_c, w_p, P, F, R, n, r, nc, rc, valid, resets = coefs
  V, A, E, G, dh0, dc0 = lins
  H = dc0.shape[-1]
  sdt = dc0.dtype

  def step(carry, inp):
    dh, dc = carry
    V_t, A_t, E_t, G_t, P_t, F_t, R_t, n_t, r_t, nc_t, rc_t, v, rs = inp
    if rs is not None:
      rr = rs[:, None]
      dh, dc = jnp.where(rr, dh0, dh), jnp.where(rr, dc0, dc)
    du = (dh.astype(w_h.dtype) @ w_h).astype(sdt) + A_t
    if s_h is not None:
      du = _norm_tangent(du, n_t, r_t, s_h)
    dz = V_t + du
    pz = P_t * dz
    dc_new = dc * F_t + pz[:, :H] + pz[:, H : 2 * H] + pz[:, 2 * H : 3 * H]
    dzo = dz[:, 3 * H :] if peep is None else dz[:, 3 * H :] + peep[2] * dc_new
    dch = dc_new if s_c is None else _norm_tangent(dc_new, nc_t, rc_t, s_c)
    if E_t is not None:
      dch = dch + E_t
    dy = P_t[:, 3 * H :] * dzo + R_t * dch
    dh_new = dy if w_p is None else (dy.astype(w_p.dtype) @ w_p).astype(sdt)
    if G_t is not None:
      dh_new = dh_new + G_t
    if v is not None:
      vv = v[:, None]
      dh_new, dc_new = jnp.where(vv, dh_new, dh), jnp.where(vv, dc_new, dc)
    return (dh_new, dc_new), dh_new

  xs = (V, A, E, G, P, F, R, n, r, nc, rc, valid, resets)
  (dh, dc), dhs = lax.scan(step, (dh0, dc0), xs, unroll=unroll)
  return dhs, dh, dc


def _backward(coefs, cts, *, unroll):
  """The transpose of :func:`_tangent`: the backward loop; returns the gradients of ``(V, A, E, G, h0, c0)``."""
  w_h, s_h, peep, s_c, w_p, P, F, R, n, r, nc, rc, valid, resets = coefs
  d_hs, d_hT, d_cT = cts
  T, B, _ = P.shape
  H = d_cT.shape[-1]
  sdt = d_hT.dtype
  w_hT = w_h.T
  w_pT = None if w_p is None else w_p.T
  ln = s_h is not None

  def body(k, carry):
    gh, gc, out, acc = carry
    t = T - 1 - k
    at = functools.partial(lax.dynamic_index_in_dim, index=t, axis=0, keepdims=False)
    gh = gh + at(d_hs)
    v = None if valid is None else at(valid)
    if v is not None:
      vv = v[:, None]
      gh_skip, gc_skip = jnp.where(vv, 0, gh), jnp.where(vv, 0, gc)
      gh, gc = jnp.where(vv, gh, 0), jnp.where(vv, gc, 0)
    P_t = at(out["V"])  # P[t], overwritten below by its gradient
    gy = gh if w_pT is None else (gh.astype(w_pT.dtype) @ w_pT).astype(sdt)
    g_ch = at(R) * gy
    gzo = P_t[:, 3 * H :] * gy
    gc = gc + (g_ch if s_c is None else _norm_transpose(g_ch, at(nc), at(rc), s_c))
    if peep is not None:
      gc = gc + peep[2] * gzo
    gz = jnp.concatenate([P_t[:, : 3 * H] * jnp.concatenate([gc, gc, gc], axis=-1), gzo], axis=-1)
    gu = gz if not ln else _norm_transpose(gz, at(n), at(r), s_h)
    gh_prev = (gu.astype(w_hT.dtype) @ w_hT).astype(sdt)
    gc_prev = gc * at(F)
    if v is not None:
      gh_prev, gc_prev = gh_prev + gh_skip, gc_prev + gc_skip
    if resets is not None:
      rr = at(resets)[:, None]
      acc = (acc[0] + jnp.where(rr, gh_prev, 0), acc[1] + jnp.where(rr, gc_prev, 0))
      gh_prev, gc_prev = jnp.where(rr, 0, gh_prev), jnp.where(rr, 0, gc_prev)
    put = lambda buf, val: lax.dynamic_update_index_in_dim(buf, val, t, 0)
    new = dict(out)
    new["V"] = put(out["V"], gz)  # over P[t], its only reader
    if ln:
      new["A"] = put(out["A"], gu)
    if "E" in out:
      new["E"] = put(out["E"], g_ch)
    if "G" in out:
      new["G"] = put(out["G"], gh)
    return gh_prev, gc_prev, new, acc

  out = {"V": P}
  if ln:
    out["A"] = jnp.zeros_like(P)
    out["E"] = jnp.zeros((T, B, H), sdt)
  if w_p is not None:
    out["G"] = jnp.zeros_like(d_hs)
  acc = None if resets is None else (jnp.zeros_like(d_hT), jnp.zeros_like(d_cT))
  dh0, dc0, out, acc = lax.fori_loop(0, T, body, (d_hT, d_cT, out, acc), unroll=unroll)
  if acc is not None:
    dh0, dc0 = dh0 + acc[0], dc0 + acc[1]
  # Without layer_norm, A enters where V does: its gradient is V's.
  return out["V"], out.get("A", out["V"]), out.get("E"), out.get("G"), dh0, dc0


_recurrence = linear_recurrence("lstm_fused_norm_tangent", _tangent, _backward)


def _rows(*pairs):
  """The batch axis of each non-``None`` leaf, in order (for :func:`~jaxlstm._src.kernels.linear.linear_recurrence`)."""
  return tuple(axis for value, axis in pairs if value is not None)


def _loop_source(xs, w_x, s_x, b, peep, sdt):
  """What the loop reads: ``(X, None)``, the projection hoisted, or for peephole layers ``(xs, project)``.

  With peepholes the input projection stays in the loop: hoisted, XLA's CPU backend ran the peephole step far
  slower (B=32, T=100, I=32, H=128, one process, calls interleaved: forward 28.9 ms hoisted against 17.8 ms in
  the loop with layer_norm, 22.3 against 11.9 ms with a projection), as in the plain kernel.
  """
  if peep is None:
    return _project(xs, w_x, s_x, b, sdt), None
  return xs, functools.partial(_project, w_x=w_x, s_x=s_x, b=b, sdt=sdt)


@functools.partial(jax.custom_jvp, nondiff_argnums=(14,))
def _layer(xs, w_x, s_x, b, w_h, s_h, peep, s_c, b_c, w_p, valid, resets, h0, c0, unroll):
  """``(hs (T, B, P), h_T, c_T)`` of the layer on time-major ``xs (T, B, I)``; ``hs`` is the carried ``h``."""
  sdt = c0.dtype
  w = _Weights(w_h, s_h, peep, s_c, b_c, w_p, sdt)
  if peep is not None:
    src, project = _loop_source(xs, w_x, s_x, b, peep, sdt)
    (h, c), hs = _forward(w, src, valid, resets, h0, c0, unroll, save=False, project=project)
    return hs, h, c
  # Inference projects a chunk of steps at a time where the whole projection is large (chunks.PROJECT_BYTES), as
  # the plain kernel does: one layer at B=64, T=256, I=64, H=256 (a 64 MiB projection), both versions jitted in
  # one process, calls interleaved, took 162 | 173 ms (projected, LayerNorm) with all T steps at once and
  # 107 | 123 ms in chunks; in the benchmark's 2-layer M model the whole projection was 0.80 | 0.77 of the
  # reference scan's speed.
  run = lambda zx, rest, carry: _forward(w, zx, rest[0], rest[1], h0, c0, unroll, save=False, carry=carry)  # noqa: E731
  project = functools.partial(_project, w_x=w_x, s_x=s_x, b=b, sdt=sdt)
  (h, c), hs = project_in_chunks(run, project, xs, (valid, resets), (h0, c0))
  return hs, h, c


@functools.partial(_layer.defjvp, symbolic_zeros=True)
def _layer_jvp(unroll, primals, tangents):
  xs, w_x, s_x, bias, w_h, s_h, peep, s_c, b_c, w_p, valid, resets, h0, c0 = primals
  w = _Weights(w_h, s_h, peep, s_c, b_c, w_p, c0.dtype)
  src, project = _loop_source(xs, w_x, s_x, bias, peep, c0.dtype)
  saved = _forward(w, src, valid, resets, h0, c0, unroll, save=True, project=project)
  return _tangent_of(_recurrence, saved, primals, tangents, unroll)


def _tangent_of(recurrence, saved, primals, tangents, unroll):
  """The layer's tangent from the forward loop's ``saved = ((h_T, c_T), factors)``: the hoisted terms (input,
  weight and gain tangents, as GEMMs and products over all ``T * B`` rows) plus ``recurrence``, whose transpose
  is the backward loop. ``primals`` and ``tangents`` are :func:`_layer`'s."""
  xs, w_x, s_x, bias, w_h, s_h, peep, s_c, b_c, w_p, valid, resets, h0, c0 = primals
  dxs, dw_x, ds_x, dbias, dw_h, ds_h, dpeep, ds_c, db_c, dw_p, _, _, dh0, dc0 = tangents
  sdt = c0.dtype
  w = _Weights(w_h, s_h, peep, s_c, b_c, w_p, sdt)
  (h, c), b = saved
  T, B, _ = xs.shape
  H4 = w_h.shape[-1]
  H, Pd = H4 // 4, h0.shape[-1]
  mm = functools.partial(jnp.matmul, preferred_element_type=sdt)
  zeros = lambda *shape: jnp.zeros(shape, sdt)
  # The hoisted terms: every tangent that does not ride on the carried (dh, dc). First the input side's,
  # the tangent of X = LN(xs @ w_x) * s_x + b, as GEMMs over all T * B rows.
  terms = []
  if not is_zero(dxs):
    terms.append(mm(dxs.reshape(T * B, xs.shape[-1]).astype(w_x.dtype), w_x))
  if not is_zero(dw_x):
    terms.append(mm(xs.reshape(T * B, xs.shape[-1]), dw_x))
  V = functools.reduce(jnp.add, terms).reshape(T, B, H4) if terms else zeros(T, B, H4)
  if s_x is not None:
    n_x, r_x = _norm(mm(xs.reshape(T * B, xs.shape[-1]), w_x).reshape(T, B, H4))
    V = _norm_tangent(V, n_x, r_x, s_x.astype(sdt)) if terms else V
    if not is_zero(ds_x):
      V = V + n_x * ds_x.astype(sdt)
  if not is_zero(dbias):
    V = V + dbias.astype(sdt)
  if s_h is not None and not is_zero(ds_h):
    V = V + b["n"] * ds_h.astype(sdt)
  if peep is not None and not is_zero(dpeep):
    c_prevs, dp = step_starts(b["cs"], c0, resets), dpeep.astype(sdt)
    V = V + jnp.concatenate([dp[0] * c_prevs, dp[1] * c_prevs, jnp.zeros_like(c_prevs), dp[2] * b["cs"]], axis=-1)
  if is_zero(dw_h):
    A = zeros(T, B, H4)
  else:
    h_prevs = step_starts(b["hs"], h0, resets)
    A = mm(h_prevs.reshape(T * B, Pd).astype(w_h.dtype), dw_h).reshape(T, B, H4)
  E = None
  if s_c is not None:
    E = zeros(T, B, H)
    if not is_zero(ds_c):
      E = E + b["nc"] * ds_c.astype(sdt)
    if not is_zero(db_c):
      E = E + db_c.astype(sdt)
  G = None
  if w_p is not None:
    G = zeros(T, B, Pd) if is_zero(dw_p) else mm(b["y"].reshape(T * B, H).astype(w_p.dtype), dw_p).reshape(T, B, Pd)
  dh0 = jnp.zeros_like(h0) if is_zero(dh0) else dh0
  dc0 = jnp.zeros_like(c0) if is_zero(dc0) else dc0
  n, r, nc, rc = (b.get(k) for k in ("n", "r", "nc", "rc"))
  coefs = (w_h, w.s_h, w.peep, w.s_c, w_p, b["P"], b["F"], b["R"], n, r, nc, rc, valid, resets)
  coef_rows = _rows(*zip(coefs, (None,) * 5 + (1,) * 9))
  lins = (V, A, E, G, dh0, dc0)
  lin_rows = _rows(*zip(lins, (1, 1, 1, 1, 0, 0)))
  d_hs, d_h, d_c = recurrence(coefs, lins, rows=(coef_rows, lin_rows, (1, 0, 0)), unroll=unroll)
  return (b["hs"], h, c), (d_hs, d_h, d_c)


def kernel_layer(name: str, run_loop: Callable, run_loop_saved: Callable, run_backward: Callable) -> Callable:
  """A projected LSTM layer (no layer norm or peepholes) on another kernel's two loops, with this kernel's
  tangent, forward mode and XLA derivatives of the loops, as :func:`jaxlstm._src.kernels.fused.kernel_layer` is
  for the plain layer.

  * ``run_loop(xs, w_x, b, w_h, w_p, valid, h0, c0) -> (hs, h_T, c_T)``: the forward loop;
  * ``run_loop_saved(...)`` (same arguments) ``-> ((h_T, c_T), {"P", "F", "R", "hs", "y"})``: the training
    forward, with :func:`_forward`'s factors;
  * ``run_backward(w_h, w_p, P, F, R, valid, d_hs, d_hT, d_cT) -> (dz, G, dh0, dc0)``: :func:`_backward`'s loop.

  Returns ``layer(xs, w_x, b, w_h, w_p, valid, h0, c0) -> (hs, h_T, c_T)``, a :func:`jax.custom_jvp`. Second-order
  autodiff, which differentiates the loops' own calls, goes through :func:`_forward` and :func:`_backward`.
  """

  def xla_saved(xs, w_x, b, w_h, w_p, valid, h0, c0):
    w = _Weights(w_h, None, None, None, None, w_p, c0.dtype)
    return _forward(w, _project(xs, w_x, None, b, c0.dtype), valid, None, h0, c0, 1, save=True)

  def fast_backward(coefs, cts):
    w_h, _, _, _, w_p, P, F, R, _, _, _, _, valid, _ = coefs
    dz, G, dh0, dc0 = run_backward(w_h, w_p, P, F, R, valid, *cts)
    return dz, dz, None, G, dh0, dc0  # without layer norm, A's gradient is V's

  saved_call = reference_jvp(run_loop_saved, xla_saved)
  backward_call = reference_jvp(fast_backward, functools.partial(_backward, unroll=1))
  recurrence = linear_recurrence(name, _tangent, lambda coefs, cts, *, unroll: backward_call(coefs, cts))

  @jax.custom_jvp
  def layer(xs, w_x, b, w_h, w_p, valid, h0, c0):
    return run_loop(xs, w_x, b, w_h, w_p, valid, h0, c0)

  @functools.partial(layer.defjvp, symbolic_zeros=True)
  def _(primals, tangents):
    xs, w_x, b, w_h, w_p, valid, h0, c0 = primals
    dxs, dw_x, db, dw_h, dw_p, _, dh0, dc0 = tangents
    saved = saved_call(*primals)
    full = (xs, w_x, None, b, w_h, None, None, None, None, w_p, valid, None, h0, c0)
    full_t = (dxs, dw_x, None, db, dw_h, None, None, None, None, dw_p, None, None, dh0, dc0)
    return _tangent_of(recurrence, saved, full, full_t, 1)

  return layer


def run(params: LSTMParams, xs, valid, resets, h0, c0, unroll):
  """The layer on time-major ``xs (T, B, I)``: ``(hs (T, B, P), h_T, c_T)``, ``hs`` the carried ``h``.

  Example:
    >>> from jaxlstm._src.kernels import fused_norm, reference
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5, layer_norm=True, proj_size=2)
    >>> xs, state0 = jnp.ones((7, 2, 3)), jaxlstm.zero_state(params, (2,))
    >>> hs, h, c = fused_norm.run(params, xs, None, None, state0.h, state0.c, 1)
    >>> hs.shape, c.shape
    ((7, 2, 2), (2, 5))
    >>> bool(jnp.allclose(hs, reference.run(params, xs, state0, None, None)[1], atol=1e-6))
    True
  """
  ln = params.layer_norm
  s_x, s_h, s_c, b_c = (None,) * 4 if ln is None else (ln.x_scale, ln.h_scale, ln.c_scale, ln.c_bias)
  xs = xs.astype(params.w_x.dtype)
  w = (params.w_x, s_x, params.b, params.w_h, s_h, params.peephole, s_c, b_c, params.w_proj)
  return _layer(xs, *w, valid, resets, h0, c0, unroll)
