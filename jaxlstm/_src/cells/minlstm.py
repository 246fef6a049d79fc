r"""The minLSTM cell of Feng et al. (2024): an LSTM whose gates read only the input, so it trains in parallel.

.. math::

  f_t = \sigma(x_t W_f + b_f) \qquad i_t = \sigma(x_t W_i + b_i) \qquad \tilde h_t = g(x_t W_h + b_h) \\
  f'_t = \frac{f_t}{f_t + i_t} \qquad i'_t = \frac{i_t}{f_t + i_t} \qquad
  h_t = f'_t \odot h_{t-1} + i'_t \odot \tilde h_t

The normalized gates sum to one, which makes the scale of ``h`` independent
of time (the paper's Section 3.2.3); there is no cell state and no output
gate. As for :mod:`~jaxlstm._src.cells.mingru`, the step is the diagonal
linear recurrence ``h_t = a_t h_{t-1} + b_t`` (``a = f'``, ``b = i' \tilde h``),
which the ``parallel`` kernel solves with an associative scan, and
``log_space`` (static, default ``True``) chooses the paper's log-space
version (``g`` on the candidate, Appendix B.3, what its parallel code runs)
or the plain one (``g`` the identity, Section 3.2).

Gate layout: along the ``3H`` axis of ``w_x`` and ``b`` the blocks are
**f, i, h** (forget gate, input gate, candidate).

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
from jaxlstm._src.cells.mingru import check_log_space, g
from jaxlstm._src.cells.registry import Cell, Recurrence, static_fields
from jaxlstm._src.initializers import glorot_uniform
from jaxlstm._src.types import Array


@static_fields("log_space")
class MinLSTMParams(NamedTuple):
  """Parameters of one minLSTM layer; the ``3H`` axis holds the blocks f, i, h.

  Attributes:
    w_x: ``(I, 3H)`` input weights, blocks f (forget gate), i (input gate) and h (candidate).
    b: ``(3H,)`` bias.
    log_space: static; ``True`` applies the paper's ``g`` to the candidate,
      so that ``h`` stays positive (the paper's log-space version).

  Example:
    >>> params = jaxlstm.minlstm_init(jax.random.key(0), 3, 5)
    >>> params.w_x.shape, params.b.shape, params.log_space
    ((3, 15), (15,), True)
  """

  w_x: Array  # (I, 3H) input weights, blocks f, i, h
  b: Array  # (3H,)
  log_space: bool = True  # static: candidate g(x W_h + b_h) > 0, the paper's log-space version

  @property
  def input_size(self) -> int:
    """``I``, the size of each input vector."""
    return self.w_x.shape[0]

  @property
  def hidden_size(self) -> int:
    """``H``, the size of the state."""
    return self.w_x.shape[1] // 3

  @property
  def output_size(self) -> int:
    """The size of each output, ``H``."""
    return self.w_x.shape[1] // 3

  @property
  def dtype(self):
    """The params' dtype, in which the input projection is computed."""
    return self.w_x.dtype


class MinLSTMState(NamedTuple):
  """State of a minLSTM layer, with any leading batch axes; there is no cell state.

  Attributes:
    h: ``(..., H)`` hidden state, which is also the layer's output.

  Example:
    >>> params = jaxlstm.minlstm_init(jax.random.key(0), 3, 5)
    >>> state, hs = jaxlstm.layer(params, jnp.ones((4, 7, 3)), lengths=jnp.array([7, 7, 3, 0]))
    >>> state._fields, state.h.shape, bool((state.h[3] == 0).all())
    (('h',), (4, 5), True)
  """

  h: jax.Array  # (..., H)


def minlstm_init(
  key: jax.Array, input_size: int, hidden_size: int, *, log_space: bool = True, dtype: DTypeLike = jnp.float32
) -> MinLSTMParams:
  """Initializes a minLSTM layer: Glorot-uniform ``w_x``, zero ``b``.

  Args:
    key: PRNG key.
    input_size: ``I``.
    hidden_size: ``H``.
    log_space: the paper's log-space version (``g`` on the candidate), the
      default as in its parallel code; ``False`` for the plain version.
    dtype: dtype of every parameter.

  Returns:
    :class:`MinLSTMParams` with ``w_x (I, 3H)``, ``b (3H,)`` and ``log_space``.

  Example:
    >>> params = jaxlstm.minlstm_init(jax.random.key(0), 3, 5, log_space=False)
    >>> params.w_x.shape, float(params.b.sum()), params.log_space
    ((3, 15), 0.0, False)
  """
  check_log_space(log_space)
  checks.check_positive_int("input_size", input_size)
  checks.check_positive_int("hidden_size", hidden_size)
  if not checks.is_float(dtype):
    raise TypeError(f"dtype must be a floating-point dtype; got {jnp.dtype(dtype)}")
  return MinLSTMParams(
    w_x=glorot_uniform(key, (input_size, 3 * hidden_size), dtype),
    b=jnp.zeros((3 * hidden_size,), dtype),
    log_space=log_space,
  )


def minlstm_zero_state(
  params: MinLSTMParams, batch_shape: tuple[int, ...] = (), dtype: DTypeLike | None = None
) -> MinLSTMState:
  """An all-zero state ``h (*batch_shape, H)``.

  Args:
    params: :class:`MinLSTMParams`.
    batch_shape: the leading batch axes, e.g. ``(B,)``.
    dtype: the state's dtype; by default float32 for 16-bit params, else the
      params' dtype, as for :func:`jaxlstm.lstm_zero_state`.

  Returns:
    :class:`MinLSTMState` of zeros.

  Example:
    >>> params = jaxlstm.minlstm_init(jax.random.key(0), 3, 5)
    >>> jaxlstm.minlstm_zero_state(params, (2, 4)).h.shape
    (2, 4, 5)
  """
  dtype = state_dtype(params.dtype) if dtype is None else dtype
  return MinLSTMState(jnp.zeros((*tuple(batch_shape), params.hidden_size), dtype))


def minlstm_project(params: MinLSTMParams, x: jax.Array, dtype) -> jax.Array:
  """The input projection ``k = x W + b``, ``(..., 3H)`` in ``dtype``, computed in the params' dtype.

  The ``project`` of the cell's :class:`~jaxlstm.Recurrence`: the parallel kernel runs it once over
  all ``T`` steps.

  Example:
    >>> from jaxlstm._src.cells.minlstm import minlstm_project
    >>> params = jaxlstm.minlstm_init(jax.random.key(0), 3, 5)
    >>> minlstm_project(params, jnp.ones((7, 2, 3)), jnp.float32).shape
    (7, 2, 15)
  """
  return (x.astype(params.dtype) @ params.w_x + params.b).astype(dtype)


def minlstm_gates(params: MinLSTMParams, k: jax.Array) -> tuple[jax.Array, jax.Array]:
  r"""``(a, b)`` of ``h' = a * h + b`` from the projection ``k = (k_f, k_i, k_h)``: ``a = f'``, ``b = i' g(k_h)``.

  The ``gates`` of the cell's :class:`~jaxlstm.Recurrence`; it reads ``params.log_space`` only.
  ``f' = f / (f + i)``, as the paper writes it, except where both gates underflow to 0 (pre-activations
  below about -87 in float32), where it is its limit ``sigmoid(k_f - k_i)`` instead of ``0 / 0``. (The
  paper's log-space form, ``sigmoid(softplus(-k_i) - softplus(-k_f))``, is exact everywhere too, but
  costs four more transcendentals per element: 5x slower forward here, 1.4x with the gradient.)

  Args:
    params: :class:`MinLSTMParams`, for ``log_space``.
    k: ``(..., 3H)`` from :func:`minlstm_project`.

  Returns:
    ``(a, b)``, each ``(..., H)``.

  Example:
    >>> from jaxlstm._src.cells.minlstm import minlstm_gates
    >>> params = jaxlstm.minlstm_init(jax.random.key(0), 3, 1, log_space=False)
    >>> a, b = minlstm_gates(params, jnp.array([2.0, 2.0, 3.0]))  # f = i: both gates weigh 1/2
    >>> float(a[0]), float(b[0])
    (0.5, 1.5)
    >>> a, b = minlstm_gates(params, jnp.array([-200.0, -201.0, 3.0]))  # both underflow: the limit
    >>> bool(jnp.isclose(a[0], jax.nn.sigmoid(1.0))), bool(jnp.isclose(b[0], 3 * jax.nn.sigmoid(-1.0)))
    (True, True)
  """
  k_f, k_i, k_h = jnp.split(k, 3, axis=-1)
  f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
  total = f + i
  ok = total > 0
  total = jnp.where(ok, total, jnp.ones_like(total))  # no 0 / 0 on the branch that where() drops
  limit = jax.nn.sigmoid(k_f - k_i)
  h_tilde = g(k_h) if params.log_space else k_h
  return jnp.where(ok, f / total, limit), jnp.where(ok, i / total, 1.0 - limit) * h_tilde


def minlstm_step(params: MinLSTMParams, state: MinLSTMState, x: jax.Array) -> tuple[MinLSTMState, jax.Array]:
  r"""One minLSTM step, :math:`h' = f' \odot h + i' \odot \tilde h`, for streaming and inference.

  .. math::

    f = \sigma(x W_f + b_f) \qquad i = \sigma(x W_i + b_i) \qquad \tilde h = g(x W_h + b_h) \\
    h' = \frac{f}{f + i} \odot h + \frac{i}{f + i} \odot \tilde h

  with ``g`` the paper's positive activation under ``log_space`` (the default) and the identity without.

  Args:
    params: :class:`MinLSTMParams`.
    state: :class:`MinLSTMState` with ``h (..., H)``.
    x: input ``(..., I)``.

  Returns:
    ``(new_state, h')`` with ``h' (..., H)``.

  References:
    Feng et al. (2024), Were RNNs all we needed? arXiv:2410.01201, Section 3.2 and Appendix B.3.

  Example:
    >>> params = jaxlstm.minlstm_init(jax.random.key(0), 3, 5)
    >>> state, h = jaxlstm.minlstm_step(params, jaxlstm.minlstm_zero_state(params, (2,)), jnp.ones((2, 3)))
    >>> h.shape, bool((h == state.h).all())
    ((2, 5), True)
  """
  a, b = minlstm_gates(params, minlstm_project(params, x, state.h.dtype))
  h = a * state.h + b
  return MinLSTMState(h), h


CELL = Cell(
  name="minlstm",
  params_type=MinLSTMParams,
  state_type=MinLSTMState,
  init=minlstm_init,
  step=minlstm_step,
  zero_state=minlstm_zero_state,
  options_of=lambda p: {"dtype": p.dtype, "log_space": p.log_space},
  gates=3,
  options=("log_space",),
  recurrence=Recurrence(minlstm_project, minlstm_gates),
)
