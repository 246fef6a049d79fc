r"""The minGRU cell of Feng et al. (2024): a GRU whose gates read only the input, so it trains in parallel.

.. math::

  z_t = \sigma(x_t W_z + b_z) \qquad \tilde h_t = g(x_t W_h + b_h) \qquad
  h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

Neither ``z_t`` nor ``\tilde h_t`` depends on ``h_{t-1}``, so the recurrence is
the diagonal linear one ``h_t = a_t h_{t-1} + b_t`` with ``a_t = 1 - z_t``,
``b_t = z_t \tilde h_t``, which the ``parallel`` kernel
(:mod:`jaxlstm.kernels.parallel`) solves over the whole sequence with an
associative scan, in ``O(log T)`` depth.

``log_space`` (a static field of the params, default ``True``) chooses between
the paper's two versions. With ``True``, ``g(x) = x + 1/2`` for ``x >= 0`` and
``sigmoid(x)`` below: the log-space minGRU of the paper's Appendix B.3, which
its parallel code (and the ``mingru-pytorch`` package) runs, and whose ``h``
stays positive. With ``False``, ``g`` is the identity: the minGRU of the
paper's Section 3.1. The name is the paper's; the parallel kernel computes
both versions the same way (its module says why it needs no logs).

Gate layout: along the ``2H`` axis of ``w_x`` and ``b`` the blocks are **z, h**
(update gate, candidate).

References:
  Feng, Tung, Ahmed, Bengio & Hajimirsadeghi (2024), Were RNNs all we needed?
  arXiv:2410.01201.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxlstm._src import checks
from jaxlstm._src.cells.lstm import state_dtype
from jaxlstm._src.cells.registry import Cell, Recurrence, static_fields
from jaxlstm._src.initializers import glorot_uniform
from jaxlstm._src.types import Array


def g(x: jax.Array) -> jax.Array:
  r"""The paper's positive activation: :math:`x + 1/2` for :math:`x \ge 0`, :math:`\sigma(x)` below.

  Continuous at 0 (both sides give 1/2) and positive everywhere, so that ``h`` stays positive and
  ``log h`` exists, which the paper's log-space scan needs.

  Example:
    >>> from jaxlstm._src.cells.mingru import g
    >>> g(jnp.array([-100.0, 0.0, 2.0]))
    Array([0. , 0.5, 2.5], dtype=float32)
  """
  return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def check_log_space(log_space) -> None:
  """Raises ``TypeError`` unless ``log_space`` is a bool.

  Example:
    >>> from jaxlstm._src.cells.mingru import check_log_space
    >>> check_log_space(True)
    >>> check_log_space("yes")
    Traceback (most recent call last):
    TypeError: log_space must be a bool; got 'yes'
  """
  if not isinstance(log_space, bool):
    raise TypeError(f"log_space must be a bool; got {log_space!r}")


@static_fields("log_space")
class MinGRUParams(NamedTuple):
  """Parameters of one minGRU layer; the ``2H`` axis holds the blocks z, h.

  Attributes:
    w_x: ``(I, 2H)`` input weights, blocks z (update gate) and h (candidate).
    b: ``(2H,)`` bias.
    log_space: static; ``True`` applies the paper's ``g`` to the candidate,
      so that ``h`` stays positive (the paper's log-space version).

  Example:
    >>> params = jaxlstm.mingru_init(jax.random.key(0), 3, 5)
    >>> params.w_x.shape, params.b.shape, params.log_space
    ((3, 10), (10,), True)
  """

  w_x: Array  # (I, 2H) input weights, blocks z, h
  b: Array  # (2H,)
  log_space: bool = True  # static: candidate g(x W_h + b_h) > 0, the paper's log-space version

  @property
  def input_size(self) -> int:
    """``I``, the size of each input vector."""
    return self.w_x.shape[0]

  @property
  def hidden_size(self) -> int:
    """``H``, the size of the state."""
    return self.w_x.shape[1] // 2

  @property
  def output_size(self) -> int:
    """The size of each output, ``H``."""
    return self.w_x.shape[1] // 2

  @property
  def dtype(self):
    """The params' dtype, in which the input projection is computed."""
    return self.w_x.dtype


class MinGRUState(NamedTuple):
  """State of a minGRU layer, with any leading batch axes.

  Attributes:
    h: ``(..., H)`` hidden state, which is also the layer's output.

  Example:
    >>> params = jaxlstm.mingru_init(jax.random.key(0), 3, 5)
    >>> state, hs = jaxlstm.layer(params, jnp.ones((4, 7, 3)))
    >>> state.h.shape, bool((state.h == hs[:, -1]).all())
    ((4, 5), True)
  """

  h: jax.Array  # (..., H)


def mingru_init(
  key: jax.Array, input_size: int, hidden_size: int, *, log_space: bool = True, dtype: DTypeLike = jnp.float32
) -> MinGRUParams:
  """Initializes a minGRU layer: Glorot-uniform ``w_x``, zero ``b``.

  Args:
    key: PRNG key.
    input_size: ``I``.
    hidden_size: ``H``.
    log_space: the paper's log-space version (``g`` on the candidate), the
      default as in its parallel code; ``False`` for the plain version.
    dtype: dtype of every parameter.

  Returns:
    :class:`MinGRUParams` with ``w_x (I, 2H)``, ``b (2H,)`` and ``log_space``.

  Example:
    >>> params = jaxlstm.mingru_init(jax.random.key(0), 3, 5, log_space=False)
    >>> params.w_x.shape, float(params.b.sum()), params.log_space
    ((3, 10), 0.0, False)
  """
  check_log_space(log_space)
  checks.check_positive_int("input_size", input_size)
  checks.check_positive_int("hidden_size", hidden_size)
  if not checks.is_float(dtype):
    raise TypeError(f"dtype must be a floating-point dtype; got {jnp.dtype(dtype)}")
  return MinGRUParams(
    w_x=glorot_uniform(key, (input_size, 2 * hidden_size), dtype),
    b=jnp.zeros((2 * hidden_size,), dtype),
    log_space=log_space,
  )


def mingru_zero_state(
  params: MinGRUParams, batch_shape: tuple[int, ...] = (), dtype: DTypeLike | None = None
) -> MinGRUState:
  """An all-zero state ``h (*batch_shape, H)``.

  Args:
    params: :class:`MinGRUParams`.
    batch_shape: the leading batch axes, e.g. ``(B,)``.
    dtype: the state's dtype; by default float32 for 16-bit params, else the
      params' dtype, as for :func:`jaxlstm.lstm_zero_state`.

  Returns:
    :class:`MinGRUState` of zeros.

  Example:
    >>> params = jaxlstm.mingru_init(jax.random.key(0), 3, 5, dtype=jnp.bfloat16)
    >>> state = jaxlstm.mingru_zero_state(params, (2,))
    >>> state.h.shape, state.h.dtype
    ((2, 5), dtype('float32'))
  """
  dtype = state_dtype(params.dtype) if dtype is None else dtype
  return MinGRUState(jnp.zeros((*tuple(batch_shape), params.hidden_size), dtype))


def mingru_project(params: MinGRUParams, x: jax.Array, dtype) -> jax.Array:
  """The input projection ``k = x W + b``, ``(..., 2H)`` in ``dtype``, computed in the params' dtype.

  The ``project`` of the cell's :class:`~jaxlstm.Recurrence`: the parallel kernel runs it once over
  all ``T`` steps.

  Example:
    >>> from jaxlstm._src.cells.mingru import mingru_project
    >>> params = jaxlstm.mingru_init(jax.random.key(0), 3, 5)
    >>> mingru_project(params, jnp.ones((7, 2, 3)), jnp.float32).shape
    (7, 2, 10)
  """
  return (x.astype(params.dtype) @ params.w_x + params.b).astype(dtype)


def mingru_gates(params: MinGRUParams, k: jax.Array) -> tuple[jax.Array, jax.Array]:
  r"""``(a, b)`` of ``h' = a * h + b`` from the projection ``k = (k_z, k_h)``: ``a = 1 - z``, ``b = z g(k_h)``.

  The ``gates`` of the cell's :class:`~jaxlstm.Recurrence`; it reads ``params.log_space`` only.
  ``1 - z`` is computed as :math:`\sigma(-k_z)`, exact where ``z`` rounds to 1.

  Args:
    params: :class:`MinGRUParams`, for ``log_space``.
    k: ``(..., 2H)`` from :func:`mingru_project`.

  Returns:
    ``(a, b)``, each ``(..., H)``.

  Example:
    >>> from jaxlstm._src.cells.mingru import mingru_gates
    >>> params = jaxlstm.mingru_init(jax.random.key(0), 3, 5)
    >>> a, b = mingru_gates(params, jnp.array([[0.0] * 5 + [2.0] * 5]))
    >>> a.shape, float(a[0, 0]), float(b[0, 0])  # z = 1/2 and g(2) = 2.5
    ((1, 5), 0.5, 1.25)
  """
  k_z, k_h = jnp.split(k, 2, axis=-1)
  h_tilde = g(k_h) if params.log_space else k_h
  return jax.nn.sigmoid(-k_z), jax.nn.sigmoid(k_z) * h_tilde


def mingru_step(params: MinGRUParams, state: MinGRUState, x: jax.Array) -> tuple[MinGRUState, jax.Array]:
  r"""One minGRU step, :math:`h' = (1 - z) \odot h + z \odot \tilde h`, for streaming and inference.

  .. math::

    z = \sigma(x W_z + b_z) \qquad \tilde h = g(x W_h + b_h) \qquad h' = (1 - z) \odot h + z \odot \tilde h

  with ``g`` the paper's positive activation under ``log_space`` (the default) and the identity without.

  Args:
    params: :class:`MinGRUParams`.
    state: :class:`MinGRUState` with ``h (..., H)``.
    x: input ``(..., I)``.

  Returns:
    ``(new_state, h')`` with ``h' (..., H)``.

  References:
    Feng et al. (2024), Were RNNs all we needed? arXiv:2410.01201, Section 3.1 and Appendix B.3.

  Example:
    >>> params = jaxlstm.mingru_init(jax.random.key(0), 3, 5)
    >>> state, h = jaxlstm.mingru_step(params, jaxlstm.mingru_zero_state(params, (2,)), jnp.ones((2, 3)))
    >>> h.shape, bool((h > 0).all())
    ((2, 5), True)
  """
  a, b = mingru_gates(params, mingru_project(params, x, state.h.dtype))
  h = a * state.h + b
  return MinGRUState(h), h


CELL = Cell(
  name="mingru",
  params_type=MinGRUParams,
  state_type=MinGRUState,
  init=mingru_init,
  step=mingru_step,
  zero_state=mingru_zero_state,
  options_of=lambda p: {"dtype": p.dtype, "log_space": p.log_space},
  gates=2,
  options=("log_space",),
  recurrence=Recurrence(mingru_project, mingru_gates),
)
