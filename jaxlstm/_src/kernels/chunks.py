"""What the fused kernels share around their loops: checkpointed chunks (``remat``), and the tangent helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


def gate_consts(H: int, dtype) -> tuple[jax.Array, jax.Array]:
  """``(scale, add)``, each ``(4H,)``: the LSTM gates i, f, g, o are ``scale * tanh(scale * z) + add``.

  One ``tanh`` over the whole gate block: ``sigmoid(z) = 0.5 * tanh(z / 2) + 0.5`` for i, f and o, ``tanh(z)``
  for g. On XLA's CPU backend one fusion over ``(B, 4H)`` runs much faster per step than four over its slices.
  """
  half, one, zero = (jnp.full((H,), v, dtype) for v in (0.5, 1.0, 0.0))
  return jnp.concatenate([half, half, one, half]), jnp.concatenate([half, half, zero, half])


def is_zero(t: Any) -> bool:
  """Whether a ``custom_jvp`` rule's tangent (with ``symbolic_zeros=True``) is zero: absent or symbolic."""
  return t is None or isinstance(t, jax.custom_derivatives.SymbolicZero)


def step_starts(
  seq: jax.Array, first: jax.Array, resets: jax.Array | None, reset: jax.Array | None = None
) -> jax.Array:
  """``(T, B, F)``: each step's starting carry, from ``seq``, the carry after each step, ``first``, the initial
  carry, and ``reset`` (``first`` unless given), where a reset step starts.

  Example:
    >>> from jaxlstm._src.kernels.chunks import step_starts
    >>> seq, first = jnp.array([[[1.0]], [[2.0]], [[3.0]]]), jnp.zeros((1, 1))
    >>> step_starts(seq, first, jnp.array([[False], [False], [True]])).ravel()
    Array([0., 1., 0.], dtype=float32)
  """
  prevs = jnp.concatenate([first[None], seq[:-1]], axis=0)
  return prevs if resets is None else jnp.where(resets[..., None], first if reset is None else reset, prevs)


def remat_chunks(core: Callable, xs: jax.Array, valid, resets, carry0: Any, k: int) -> tuple[jax.Array, Any]:
  """``core`` over ``xs (T, B, I)`` in checkpointed chunks of ``k`` steps: ``(hs (T, B, F), final carry)``.

  ``core(x, valid, resets, carry) -> (hs, carry)`` runs one chunk from ``carry``. Under :func:`jax.checkpoint`
  training keeps only the chunk-boundary carries and recomputes each chunk's factors in the backward pass, so
  memory no longer grows with ``T`` times the gate width. The last chunk is padded with invalid steps, which
  keep the carry, so the final carry is unchanged; a reset inside a chunk is ``core``'s to honour (it starts
  from the layer's initial state, not the chunk's first carry).

  Example:
    >>> from jaxlstm._src.kernels.chunks import remat_chunks
    >>> def core(x, v, r, carry):  # a running sum that skips invalid steps
    ...   hs = carry + jnp.cumsum(jnp.where(v[..., None], x, 0.0), axis=0)
    ...   return hs, hs[-1]
    >>> hs, last = remat_chunks(core, jnp.ones((5, 1, 1)), None, None, jnp.zeros((1, 1)), 2)
    >>> hs.ravel(), last.ravel()
    (Array([1., 2., 3., 4., 5.], dtype=float32), Array([5.], dtype=float32))
  """
  T, B = xs.shape[:2]
  n = -(-T // k)
  pad = n * k - T
  if valid is None:
    valid = jnp.ones((T, B), bool)
  if pad:
    # Padded steps are invalid and never reset: the carry stays frozen.
    xs = jnp.concatenate([xs, jnp.zeros((pad, *xs.shape[1:]), xs.dtype)], axis=0)
    valid = jnp.concatenate([valid, jnp.zeros((pad, B), bool)], axis=0)
    if resets is not None:
      resets = jnp.concatenate([resets, jnp.zeros((pad, B), bool)], axis=0)
  chunked = lambda a: None if a is None else a.reshape(n, k, *a.shape[1:])  # noqa: E731

  @jax.checkpoint
  def chunk(carry, inp):
    hs, carry = core(*inp, carry)
    return carry, hs

  carry, hs = lax.scan(chunk, carry0, (chunked(xs), chunked(valid), chunked(resets)))
  return hs.reshape(n * k, *hs.shape[2:])[:T], carry


def project_steps(xs: jax.Array, w_x: jax.Array, dtype) -> jax.Array:
  """``xs (K, B, I) @ w_x (I, G)`` as one GEMM over all ``K * B`` rows: ``(K, B, G)`` in ``dtype``.

  Example:
    >>> from jaxlstm._src.kernels.chunks import project_steps
    >>> project_steps(jnp.ones((4, 2, 3)), jnp.ones((3, 5)), jnp.float32).shape
    (4, 2, 5)
  """
  K, B, I = xs.shape
  return (xs.reshape(K * B, I) @ w_x).astype(dtype).reshape(K, B, w_x.shape[-1])


# The inference loops project the inputs of PROJECT_STEPS steps at a time, not of all T at once, where the whole
# projection would exceed PROJECT_BYTES. A buffer that large is fresh memory on every call (glibc maps blocks
# over its 32 MiB threshold afresh, and each page faults on first touch), and the projection GEMM writing it ran
# at a third of this 2-core CPU's GEMM rate: (16384 x 64) @ (64 x 768) took 22 ms into a 48 MiB output, 5.6 ms
# for half the rows. One GRU layer's forward pass (B=64, H=256, T=256; in 64 | 256) took 95 | 123 ms with the
# whole projection, 81 | 102 ms in chunks of 32 steps (8: 86 | 106, 64: 81 | 107); at B=128, T=512, H=512,
# 923 against 783 ms. Below the threshold chunks lose: 7 % at B=32, T=100, H=128 (a 4.7 MiB projection), even
# at 9.4 and 19 MiB, 10 % ahead at 24 MiB.
PROJECT_STEPS = 32
PROJECT_BYTES = 16 * 2**20


def project_in_chunks(run: Callable, project: Callable, xs: jax.Array, rest: tuple, carry: Any) -> tuple[Any, Any]:
  """``run(project(xs), rest, carry)``, in chunks of :data:`PROJECT_STEPS` steps where the projection is large.

  ``project(xs (K, B, I)) -> zx (K, B, G)`` projects ``K`` steps' inputs; ``run(zx, rest, carry) -> (carry, ys)``
  runs the loop over them, with ``rest`` the per-step arrays ``(K, B)`` (or ``None``) and ``ys`` a pytree of
  ``(K, ...)`` outputs. Returns ``(carry, ys)`` over all ``T`` steps, as one call of ``run`` would.

  Example:
    >>> from jaxlstm._src.kernels.chunks import project_in_chunks
    >>> run = lambda zx, rest, c: jax.lax.scan(lambda c, z: (c + z.sum(), c), c, zx)
    >>> xs = jnp.ones((100, 2, 3))
    >>> project = lambda x: x @ jnp.ones((3, 2**16))  # 50 MiB for all T: 3 chunks of 32 steps, then 4 steps
    >>> c, ys = project_in_chunks(run, project, xs, (None,), 0.0)
    >>> float(c), ys.shape
    (39321600.0, (100,))
  """
  T = xs.shape[0]
  zx_shape = jax.eval_shape(project, xs[:1])
  whole = T * zx_shape.size * zx_shape.dtype.itemsize
  K = PROJECT_STEPS
  if whole <= PROJECT_BYTES or T < 2 * K:
    return run(project(xs), rest, carry)
  n = T // K

  def split(a):
    return None if a is None else a[: n * K].reshape(n, K, *a.shape[1:])

  def chunk(carry, inputs):
    x, r = inputs
    return run(project(x), r, carry)

  carry, ys = lax.scan(chunk, carry, (split(xs), tuple(split(a) for a in rest)))
  ys = jax.tree.map(lambda y: y.reshape(n * K, *y.shape[2:]), ys)
  if T % K:
    carry, tail = run(project(xs[n * K :]), tuple(None if a is None else a[n * K :] for a in rest), carry)
    ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys, tail)
  return carry, ys
