r"""The parallel kernel: cells whose step is a diagonal linear recurrence, solved with an associative scan.

The minGRU and minLSTM of Feng et al. (2024) compute their gates from the
input alone, so a step is :math:`h_t = a_t \odot h_{t-1} + b_t` with
``(a_t, b_t) = gates(k_t)`` and ``k = project(xs)`` known for every ``t``
before the recurrence starts: the cell record's :class:`~jaxlstm.Recurrence`.
The kernel projects all ``T`` steps in one GEMM; the steps then compose
associatively,

.. math::

  (a_1, b_1) \circ (a_2, b_2) = (a_1 a_2,\; a_2 b_1 + b_2),

so :func:`jax.lax.associative_scan` solves the recurrence in ``O(log T)``
depth instead of the ``T`` dependent steps of :mod:`~jaxlstm.kernels.reference`.

**Why no logs.** The paper's parallel code (Appendix B) scans in log space
because it follows Heinsen (2023): ``h_t = a*_t (h_0 + sum_s b_s / a*_s)``
with ``a*_t = prod a``, whose ``1 / a*`` overflows within a few hundred steps
unless it is taken as ``exp(-log a*)`` inside a ``logcumsumexp``. The pairwise
operator above never divides: products of ``0 < a < 1`` only shrink (to an
exact, harmless 0) and the sums stay bounded, so the scan is as accurate in
plain arithmetic as the sequential step (the tests hold float32 at
``T = 4096`` to the float64 reference), needs no ``exp`` or ``log`` per
element, and lets ``h_0`` and the plain (non-``g``) cells have any sign. The
tests also hold the kernel to the paper's own log-space algorithm.

**Blocks.** :func:`recurrence_scan` runs the sequence as blocks of
consecutive steps, each solved by an associative scan, one after the other
with the state carried between them (:func:`default_block`), and evaluates
``gates`` block by block, so that ``a`` and ``b`` never exist for the whole
sequence. On an accelerator the block is the whole sequence: one associative
scan, ``O(log T)`` deep. On a CPU the block is one step, so the scan is one
sequential pass over ``k``: nothing in the recurrence is a matmul any more,
a CPU has no idle lanes for the scan's extra work to fill, and each of its
levels is another pass over memory; measured, longer blocks were slower,
up to 1.8x for a whole training step.

**Resets and validity.** ``resets`` make the scan segmented: an element that
starts a segment discards what comes before it, and its state starts again
from the initial state, as the reference kernel's reset does. An invalid step
is the identity ``(a, b) = (1, 0)``, so it keeps the state; a reset at an
invalid step still resets.

**Gradients.** The scan is a :func:`jax.custom_jvp`. Its tangent is the same
kind of recurrence, ``dh_t = a_t dh_{t-1} + (da_t h_{t-1} + db_t)``, linear in
``(dk, dh0)`` given ``k`` and the states: a
:func:`~jaxlstm._src.kernels.linear.linear_recurrence` whose transpose is the
hand-written backward pass. There the gradient reaching ``h_t`` flows back
through ``lam_t = g_t + a_{t+1} lam_{t+1}`` (cut where ``t + 1`` starts a
segment), itself a linear recurrence, run by the same blocks backwards in time
in one pass that recomputes each block's gates and pulls
``da_t = lam_t h_{t-1}``, ``db_t = lam_t`` back through them to ``dk``,
written over ``k``. It saves only ``k`` and the states, where differentiating
through an associative scan would keep every level. The projection's
gradients are then one GEMM each. So ``jit``, ``vmap``, ``grad``, ``jvp``,
``jacfwd`` and ``hessian`` work, and reverse mode costs what the
:func:`jax.custom_vjp` it replaced cost.

References:
  Feng, Tung, Ahmed, Bengio & Hajimirsadeghi (2024), Were RNNs all we needed?
  arXiv:2410.01201. Blelloch (1990), Prefix sums and their applications.
  Heinsen (2023), Efficient parallelization of a ubiquitous sequential
  computation. arXiv:2311.06281.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxlstm._src.cells.registry import cell_of
from jaxlstm._src.kernels.chunks import is_zero
from jaxlstm._src.kernels.linear import linear_recurrence
from jaxlstm._src.kernels.registry import Kernel, LayerCall


def why_not(call: LayerCall) -> str | None:
  """Why the parallel kernel cannot run ``call``, or ``None``.

  It runs every cell whose record has a ``recurrence`` (``mingru`` and
  ``minlstm``), with ``lengths``, ``mask``, ``resets``, reverse and any
  layout, but not ``remat``.

  Example:
    >>> from jaxlstm.kernels import parallel
    >>> params = jaxlstm.mingru_init(jax.random.key(0), 3, 5)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("mingru"), params=params, lengths=True, mask=True,
    ...                          resets=True, reverse=True, time_major=False, remat=None)
    >>> parallel.why_not(call) is None
    True
    >>> parallel.why_not(call._replace(cell=jaxlstm.get_cell("gru")))
    'it runs cells whose gates read only the input (mingru, minlstm), not gru, whose step is not linear in h'
  """
  if call.cell.recurrence is None:
    return (
      f"it runs cells whose gates read only the input (mingru, minlstm), not {call.cell.name}, whose step "
      f"is not linear in h"
    )
  if call.remat is not None:
    return "remat is implemented by the fused kernels only; the parallel kernel saves only a and the states"
  return None


def default_block(T: int) -> int:
  """Steps per block of :func:`recurrence_scan` for ``T`` steps on JAX's default backend: 1 on a CPU, else ``T``.

  A block is solved by an associative scan and the blocks follow one another. One block of ``T`` steps
  is the whole sequence in ``O(log T)`` depth, for accelerators. On a 2-core CPU a minGRU training step
  (``T = 4096, B = 8, I = 32, H = 128``, ``bench/results_mingru.md``) took 210 ms with blocks of 1 step
  (an associative scan of one element: a sequential pass), 227 ms with 8, 282 ms with 64 and 378 ms
  with one block of ``T``. A CPU has no idle lanes for the scan's extra work to fill, and every level of
  the scan is another pass over memory. (Not yet timed on an accelerator.)

  Example:
    >>> from jaxlstm.kernels import parallel
    >>> parallel.default_block(4096) == (1 if jax.default_backend() == "cpu" else 4096)
    True
  """
  return 1 if jax.default_backend() == "cpu" else T


def _op(e1, e2):
  """``e1`` then ``e2``, elements ``(a, b)`` or ``(a, b, starts)``; an ``e2`` that starts a segment drops ``e1``."""
  a1, b1, *s1 = e1
  a2, b2, *s2 = e2
  a, b = a1 * a2, a2 * b1 + b2
  if not s1:
    return a, b
  return jnp.where(s2[0], a2, a), jnp.where(s2[0], b2, b), s1[0] | s2[0]


def _padded(arrays, fills, T: int, n: int):
  """``arrays`` ``(T, ...)`` (or ``None``) padded with ``fills`` to whole blocks of ``n``, and the number of blocks."""
  m = -(-T // n)
  if m * n == T:
    return arrays, m
  return tuple(
    None if x is None else jnp.concatenate([x, jnp.full((m * n - T, *x.shape[1:]), f, x.dtype)], axis=0)
    for x, f in zip(arrays, fills)
  ), m


def _slice(x, j, n):
  """Block ``j`` of ``x (m * n, ...)``, or ``None``."""
  return None if x is None else lax.dynamic_slice_in_dim(x, j * n, n)


def _masked(gates, k, v):
  """``gates(k)`` with each invalid step (``v`` false) the identity ``(a, b) = (1, 0)``."""
  a, b = gates(k)
  if v is None:
    return a, b
  return jnp.where(v, a, jnp.ones_like(a)), jnp.where(v, b, jnp.zeros_like(b))


def _prepare(k, valid, starts, n):
  """Validity and segment starts as ``(T, B, 1)`` flags, everything padded to whole blocks of ``n`` steps."""
  T = k.shape[0]
  if valid is None and T % n:
    valid = jnp.ones(k.shape[:2], bool)  # the padding is invalid, so the identity
  v = None if valid is None else valid[..., None]
  s = None if starts is None else starts[..., None]
  return _padded((k, v, s), (0, False, False), T, n)


def _forward(gates, n, k, h0, valid, starts):
  """The states ``(T, B, H)`` of ``h_t = a_t * (h0 if starts_t else h_{t-1}) + b_t``, ``(a, b) = gates(k_t)``."""
  T = k.shape[0]
  (k, v, s), m = _prepare(k, valid, starts, n)

  def block(h, j):
    # Within the block, h_t = A_t * (h0 after a start, else the state the block starts from) + B_t, from
    # the composites (A, B) of its steps up to each one.
    s_j = _slice(s, j, n)
    a, b = _masked(gates, _slice(k, j, n), _slice(v, j, n))
    A, B, *started = lax.associative_scan(_op, (a, b) if s_j is None else (a, b, s_j), axis=0)
    hs = A * (jnp.where(started[0], h0, h) if started else h) + B
    return hs[-1], hs

  if m == 1:
    return block(h0, 0)[1][:T]
  # The blocks are sliced out of the whole arrays rather than scanned over as (m, n, ...) reshapes: on
  # CPU, XLA copied reshaped scan inputs, a pass over memory, where slices of loop invariants cost nothing.
  hs = lax.scan(block, h0, jnp.arange(m, dtype=jnp.int32))[1]
  return hs.reshape(m * n, *hs.shape[2:])[:T]


def _backward(gates, n, k, hs, h0, valid, starts, g):
  """``(dk, dh0)`` of :func:`_forward` for the gradient ``g (T, B, H)`` of its states, in one reverse pass.

  ``lam_t``, the gradient reaching ``h_t``, is ``g_t + a'_t lam_{t+1}`` with ``a'_t = a_{t+1}``, or 0 where
  ``t + 1`` starts a segment (``h_{t+1}`` does not read ``h_t`` there): the same recurrence backwards in
  time. Then ``da_t = lam_t h_{t-1}`` (``h0`` at a start) and ``db_t = lam_t`` go back through the
  step's ``gates`` to ``dk_t``, and ``dh0`` gathers ``a_t lam_t`` from every step that reads ``h0``.
  ``dk`` is written over a copy of ``k`` block by block: each block reads its own ``k`` before the
  write, and a fresh ``(T, B, K)`` buffer would cost a pass over new memory.
  """
  T = k.shape[0]
  (k, v, s), m = _prepare(k, valid, starts, n)
  (hs, g), _ = _padded((hs, g), (0, 0), T, n)  # the padding's g is 0 and nothing follows it: its lam is 0
  zero = jnp.zeros_like(h0)

  def block(j, carry):
    lam_after, a_after, _, dh0, dk = carry  # lam and a' at the first step of the block after
    v_j, s_j, hs_j = _slice(v, j, n), _slice(s, j, n), _slice(hs, j, n)
    (a, _), pull = jax.vjp(lambda kk: _masked(gates, kk, v_j), _slice(dk, j, n))
    cut = a if s_j is None else jnp.where(s_j, jnp.zeros_like(a), a)  # a_t, or 0 at a segment start
    a_next = jnp.concatenate([cut[1:], a_after[None]], axis=0)  # (n, B, H): a'_t
    A, G = lax.associative_scan(_op, (a_next, _slice(g, j, n)), axis=0, reverse=True)
    lam = A * lam_after + G
    before = lax.dynamic_index_in_dim(hs, jnp.maximum(j * n - 1, 0), keepdims=False)
    h_prev = jnp.concatenate([jnp.where(j == 0, h0, before)[None], hs_j[:-1]], axis=0)
    if s_j is not None:
      h_prev = jnp.where(s_j, h0, h_prev)
      # Resets after step 0 read h0 too (step 0 is counted once, after the loop).
      first = (lax.broadcasted_iota(jnp.int32, s_j.shape, 0) + j * n) == 0
      dh0 = dh0 + jnp.sum(jnp.where(s_j & ~first, a * lam, jnp.zeros_like(lam)), axis=0)
    (dk_j,) = pull((lam * h_prev, lam))
    return lam[0], cut[0], a[0], dh0, lax.dynamic_update_slice_in_dim(dk, dk_j.astype(dk.dtype), j * n, 0)

  init = (zero, zero, zero, zero, k)
  lam0, _, a0, dh0, dk = block(0, init) if m == 1 else lax.fori_loop(0, m, lambda i, c: block(m - 1 - i, c), init)
  return dk[:T], dh0 + a0 * lam0


def _tangent(coefs, lins, *, gates, n):
  """The tangent of :func:`_forward`, linear in ``lins = (dk, dh0)``: the transpose of :func:`_backward`.

  ``coefs = (k, hs, h0, valid, starts)``, ``hs`` the states :func:`_forward` gave. The tangent is the same
  kind of recurrence, ``dh_t = a_t * (dh0 if starts_t else dh_{t-1}) + u_t`` with ``u_t = da_t h_{t-1} + db_t``
  (``h0`` at a start) and ``(da, db)`` the tangent of ``gates`` at ``k_t``, so the same blocks solve it, each
  evaluating its gates and their tangent, as :func:`_backward` pulls back through them.
  """
  k, hs, h0, valid, starts = coefs
  dk, dh0 = lins
  T = k.shape[0]
  (k, v, s), m = _prepare(k, valid, starts, n)
  (dk, hs), _ = _padded((dk, hs), (0, 0), T, n)  # the padding is invalid: its a is 1 and its u is 0

  def block(dh, j):
    v_j, s_j, hs_j = _slice(v, j, n), _slice(s, j, n), _slice(hs, j, n)
    (a, _), (da, db) = jax.jvp(lambda kk: _masked(gates, kk, v_j), (_slice(k, j, n),), (_slice(dk, j, n),))
    before = lax.dynamic_index_in_dim(hs, jnp.maximum(j * n - 1, 0), keepdims=False)
    h_prev = jnp.concatenate([jnp.where(j == 0, h0, before)[None], hs_j[:-1]], axis=0)
    if s_j is not None:
      h_prev = jnp.where(s_j, h0, h_prev)
    u = da * h_prev + db
    A, U, *started = lax.associative_scan(_op, (a, u) if s_j is None else (a, u, s_j), axis=0)
    dhs = A * (jnp.where(started[0], dh0, dh) if started else dh) + U
    return dhs[-1], dhs

  if m == 1:
    return block(dh0, 0)[1][:T]
  dhs = lax.scan(block, dh0, jnp.arange(m, dtype=jnp.int32))[1]
  return dhs.reshape(m * n, *dhs.shape[2:])[:T]


def _transpose(coefs, g, *, gates, n):
  """The transpose of :func:`_tangent`: ``(dk, dh0)`` for the gradient ``g`` of the states, by :func:`_backward`."""
  k, hs, h0, valid, starts = coefs
  return _backward(gates, n, k, hs, h0, valid, starts, g)


_recurrence = linear_recurrence("parallel_scan_tangent", _tangent, _transpose)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _scan(gates, n, k, h0, valid, starts):
  return _forward(gates, n, k, h0, valid, starts)


@functools.partial(_scan.defjvp, symbolic_zeros=True)
def _scan_jvp(gates, n, primals, tangents):
  # Forward mode runs _tangent; reverse mode transposes it into _backward, which needs only k and the states,
  # the residuals a custom_vjp would keep. A tangent reaching k, hs or h0 inside _tangent or _backward
  # (second order) goes through jax.jvp of the plain functions.
  k, h0, valid, starts = primals
  dk, dh0 = tangents[:2]
  hs = _forward(gates, n, k, h0, valid, starts)
  dk = jnp.zeros_like(k) if is_zero(dk) else dk
  dh0 = jnp.zeros_like(h0) if is_zero(dh0) else dh0
  flags = tuple(1 for f in (valid, starts) if f is not None)  # the batch axis of each (T, B) flag that is there
  rows = ((1, 1, 0, *flags), (1, 0), (1,))
  return hs, _recurrence((k, hs, h0, valid, starts), (dk, dh0), rows=rows, gates=gates, n=n)


def recurrence_scan(
  gates: Callable,
  k: jax.Array,
  h0: jax.Array,
  valid: jax.Array | None = None,
  resets: jax.Array | None = None,
  *,
  block: int | None = None,
) -> jax.Array:
  """Every state of ``h_t = a_t * (h0 if t is a reset else h_{t-1}) + b_t``, ``(a_t, b_t) = gates(k_t)``.

  Args:
    gates: ``gates(k) -> (a, b)``, elementwise over the leading axes: a cell's ``Recurrence.gates``
      with the params' static fields bound. It must not close over traced arrays.
    k: ``(T, B, K)``, what the cell's ``project`` gives.
    h0: ``(B, H)`` initial state.
    valid: ``(T, B)`` bools, or ``None``; an invalid step keeps the state.
    resets: ``(T, B)`` bools, or ``None``; a reset step starts again from ``h0``.
    block: steps per block, each solved by an associative scan, one block after the other;
      :func:`default_block` when ``None``.

  Returns:
    ``hs (T, B, H)``, the state after each step.

  Example:
    >>> from jaxlstm._src.kernels.parallel import recurrence_scan
    >>> gates = lambda k: (k[..., :1], k[..., 1:])  # k holds (a, b)
    >>> k = jnp.tile(jnp.array([0.5, 1.0]), (4, 1, 1))  # (T, B, K) = (4, 1, 2)
    >>> resets = jnp.array([False, False, True, False])[:, None]  # (T, B)
    >>> recurrence_scan(gates, k, jnp.zeros((1, 1)), None, resets, block=4).ravel()
    Array([1. , 1.5, 1. , 1.5], dtype=float32)
    >>> recurrence_scan(gates, k, jnp.zeros((1, 1)), resets, None, block=3).ravel()  # steps 0, 1, 3 invalid
    Array([0., 0., 1., 1.], dtype=float32)
  """
  T = k.shape[0]
  return _scan(gates, max(1, min(default_block(T) if block is None else block, T)), k, h0, valid, resets)


def run(params: Any, xs: jax.Array, state: Any, valid, resets, *, lengths=None, unroll=None, remat=None):
  """The kernel's core: the cell's ``project`` for all ``T`` steps, then :func:`recurrence_scan` of its ``gates``.

  The cell's state must be a record of one field, ``h``, which is also its output.

  Example:
    >>> from jaxlstm.kernels import parallel, reference
    >>> params = jaxlstm.minlstm_init(jax.random.key(0), 3, 5)
    >>> xs, state = jnp.ones((7, 2, 3)), jaxlstm.zero_state(params, (2,))
    >>> resets = jnp.zeros((7, 2), bool).at[4].set(True)  # (T, B): both rows start again at step 4
    >>> final, ys = parallel.run(params, xs, state, None, resets)
    >>> ys.shape, bool(jnp.allclose(ys, reference.run(params, xs, state, None, resets)[1], atol=1e-6))
    ((7, 2, 5), True)
  """
  del lengths, unroll, remat  # validity arrives in ``valid``; nothing is unrolled; remat is refused
  rec = cell_of(params).recurrence
  assert rec is not None  # why_not refuses a cell without one
  (h0,), treedef = jax.tree.flatten(state)
  k = rec.project(params, xs, h0.dtype)  # (T, B, K): one (T B, I) GEMM
  # gates reads the params' static fields only: it gets the params' structure with no arrays in it.
  skeleton = jax.tree.map(lambda _: None, params)
  hs = recurrence_scan(functools.partial(rec.gates, skeleton), k, h0, valid, resets)
  return jax.tree.unflatten(treedef, [hs[-1]]), hs


KERNEL = Kernel(name="parallel", why_not=why_not, run=run, rank=20)
