"""Weight initializers for recurrent cells.

Each takes a PRNG key, a shape and a dtype and returns an array, like
``jax.nn.initializers``; the recurrent one is orthogonal *per gate block*.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike


def glorot_uniform(key: jax.Array, shape: tuple[int, int], dtype: DTypeLike = jnp.float32) -> jax.Array:
  """Glorot (Xavier) uniform over a ``(fan_in, fan_out)`` matrix.

  Args:
    key: PRNG key.
    shape: ``(fan_in, fan_out)``.
    dtype: dtype of the result.

  Returns:
    Array of ``shape`` drawn from ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``.

  Example:
    >>> w = jaxlstm.glorot_uniform(jax.random.key(0), (3, 5))
    >>> w.shape, bool((jnp.abs(w) <= (6 / 8) ** 0.5).all())
    ((3, 5), True)
  """
  fan_in, fan_out = shape
  limit = (6.0 / max(fan_in + fan_out, 1)) ** 0.5
  return jax.random.uniform(key, shape, jnp.float32, -limit, limit).astype(dtype)


def orthogonal(key: jax.Array, n: int, dtype=jnp.float32) -> jax.Array:
  """A random ``(n, n)`` orthogonal matrix (Haar measure, via QR with sign fix).

  Example:
    >>> from jaxlstm._src.initializers import orthogonal
    >>> q = orthogonal(jax.random.key(0), 4)
    >>> bool(jnp.allclose(q.T @ q, jnp.eye(4), atol=1e-5))
    True
  """
  a = jax.random.normal(key, (n, n), jnp.float32)
  q, r = jnp.linalg.qr(a)
  # Multiplying by sign(diag(r)) makes the distribution uniform over O(n).
  q = q * jnp.sign(jnp.diagonal(r))[None, :]
  return q.astype(dtype)


def orthogonal_blocks(
  key: jax.Array, rows: int, num_blocks: int, cols: int | None = None, dtype: DTypeLike = jnp.float32
) -> jax.Array:
  """Recurrent weight ``(rows, num_blocks * cols)`` with an orthogonal block per gate.

  Orthogonalising the whole ``(H, 4H)`` matrix at once gives each gate block a
  norm below one, which shrinks the recurrent signal; one orthogonal matrix per
  gate keeps every block norm-preserving.

  Args:
    key: PRNG key.
    rows: recurrent input size (``H``, or ``P`` with a projection).
    num_blocks: number of gates (4 for an LSTM, 3 for a GRU, 1 for an RNN).
    cols: hidden size of each block; defaults to ``rows``.
    dtype: dtype of the result.

  Returns:
    Array of shape ``(rows, num_blocks * cols)``. When ``rows != cols`` each block
    has orthonormal columns or rows, whichever the shape allows.

  Example:
    >>> w_h = jaxlstm.orthogonal_blocks(jax.random.key(0), 5, 4)  # an LSTM's (H, 4H)
    >>> w_h.shape
    (5, 20)
    >>> f = w_h[:, 5:10]  # the forget gate's block is orthogonal on its own
    >>> bool(jnp.allclose(f.T @ f, jnp.eye(5), atol=1e-5))
    True
  """
  cols = rows if cols is None else cols
  n = max(rows, cols)
  blocks = [orthogonal(k, n, jnp.float32)[:rows, :cols] for k in jax.random.split(key, num_blocks)]
  return jnp.concatenate(blocks, axis=1).astype(dtype)
