r"""The vanilla (Elman) RNN cell: ``h' = act(x W_x + h W_h + b)``."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxlstm._src import checks
from jaxlstm._src.cells.lstm import state_dtype
from jaxlstm._src.cells.registry import Cell, static_fields
from jaxlstm._src.initializers import glorot_uniform, orthogonal_blocks
from jaxlstm._src.types import Array

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


@static_fields("activation")
class RNNParams(NamedTuple):
  """Parameters of one Elman RNN layer.

  ``activation`` is part of the model, not of a call: it is a static field
  (in the pytree structure, not a leaf), so it survives ``jit``, optax
  updates, the Flax modules and checkpoints, and a converted PyTorch
  ``nn.RNN(nonlinearity="relu")`` computes relu wherever it is run.

  Attributes:
    w_x: ``(I, H)`` input weights.
    w_h: ``(H, H)`` recurrent weights.
    b: ``(H,)`` bias.
    activation: ``"tanh"`` or ``"relu"``; static.

  Example:
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 5, activation="relu")
    >>> [leaf.shape for leaf in jax.tree.leaves(params)], params.activation
    ([(3, 5), (5, 5), (5,)], 'relu')
  """

  w_x: Array  # (I, H)
  w_h: Array  # (H, H)
  b: Array  # (H,)
  activation: str = "tanh"  # "tanh" or "relu"; static

  @property
  def input_size(self) -> int:
    """``I``, the size of each input vector."""
    return self.w_x.shape[0]

  @property
  def hidden_size(self) -> int:
    """``H``, the size of the state."""
    return self.w_h.shape[0]

  @property
  def output_size(self) -> int:
    """The size of each output, ``H``."""
    return self.w_h.shape[0]

  @property
  def dtype(self):
    """The params' dtype, in which the step is computed."""
    return self.w_x.dtype


class RNNState(NamedTuple):
  """State of an Elman RNN layer, with any leading batch axes.

  Attributes:
    h: ``(..., H)`` hidden state, which is also the layer's output.

  Example:
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 5)
    >>> state = jaxlstm.rnn_zero_state(params, (2, 4))  # two batch axes
    >>> state._fields, state.h.shape
    (('h',), (2, 4, 5))
  """

  h: jax.Array  # (..., H)


def rnn_init(
  key: jax.Array, input_size: int, hidden_size: int, *, activation: str = "tanh", dtype: DTypeLike = jnp.float32
) -> RNNParams:
  """Initializes an Elman RNN layer: Glorot-uniform ``w_x``, orthogonal ``w_h``, zero ``b``.

  Args:
    key: PRNG key.
    input_size: ``I``.
    hidden_size: ``H``.
    activation: ``"tanh"`` or ``"relu"`` (PyTorch's ``nonlinearity``); stored
      in the params.
    dtype: dtype of every parameter.

  Returns:
    :class:`RNNParams` with ``w_x (I, H)``, ``w_h (H, H)``, ``b (H,)`` and
    ``activation``.

  Example:
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 5, activation="relu")
    >>> params.w_x.shape, params.w_h.shape, params.activation
    ((3, 5), (5, 5), 'relu')
  """
  check_activation(activation)
  checks.check_positive_int("input_size", input_size)
  checks.check_positive_int("hidden_size", hidden_size)
  if not checks.is_float(dtype):
    raise TypeError(f"dtype must be a floating-point dtype; got {jnp.dtype(dtype)}")
  k_x, k_h = jax.random.split(key)
  return RNNParams(
    w_x=glorot_uniform(k_x, (input_size, hidden_size), dtype),
    w_h=orthogonal_blocks(k_h, hidden_size, 1, hidden_size, dtype),
    b=jnp.zeros((hidden_size,), dtype),
    activation=activation,
  )


def rnn_zero_state(params: RNNParams, batch_shape: tuple[int, ...] = (), dtype: DTypeLike | None = None) -> RNNState:
  """An all-zero state ``h (*batch_shape, H)``.

  Args:
    params: :class:`RNNParams`.
    batch_shape: the leading batch axes, e.g. ``(B,)``.
    dtype: the state's dtype; by default float32 for 16-bit params, else the
      params' dtype, as for :func:`jaxlstm.lstm_zero_state`.

  Returns:
    :class:`RNNState` of zeros.

  Example:
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 5)
    >>> jaxlstm.rnn_zero_state(params, (2,)).h.shape
    (2, 5)
  """
  dtype = state_dtype(params.dtype) if dtype is None else dtype
  return RNNState(jnp.zeros((*tuple(batch_shape), params.hidden_size), dtype))


def check_activation(activation: str, name: str = "activation") -> None:
  """Raises ``ValueError`` unless ``activation`` is one of :data:`ACTIVATIONS`.

  Example:
    >>> from jaxlstm._src.cells.rnn import check_activation
    >>> check_activation("relu")
    >>> check_activation("gelu")
    Traceback (most recent call last):
    ValueError: activation must be one of ['relu', 'tanh']; got 'gelu'
  """
  if not isinstance(activation, str) or activation not in ACTIVATIONS:
    raise ValueError(f"{name} must be one of {sorted(ACTIVATIONS)}; got {activation!r}")


def check_call_activation(params: RNNParams, activation: str | None) -> None:
  """Refuses a call-time ``activation`` that contradicts the one stored in the params.

  The activation belongs to the model; a call may restate it, but a
  different value would silently compute another function.

  Example:
    >>> from jaxlstm._src.cells.rnn import check_call_activation
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 5, activation="relu")
    >>> check_call_activation(params, "relu")
    >>> check_call_activation(params, "tanh")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: activation='tanh' conflicts with the params, which were built with activation='relu'; ...
  """
  if activation is None:
    return
  check_activation(activation)
  if activation != params.activation:
    raise ValueError(
      f"activation={activation!r} conflicts with the params, which were built with "
      f"activation={params.activation!r}; the activation is part of the model (see "
      f"rnn_init), so drop the argument, or build params with "
      f"params._replace(activation={activation!r})"
    )


def rnn_step(
  params: RNNParams, state: RNNState, x: jax.Array, *, activation: str | None = None
) -> tuple[RNNState, jax.Array]:
  r"""One Elman RNN step, :math:`h' = \mathrm{act}(x W_x + h W_h + b)`.

  Args:
    params: :class:`RNNParams`; ``params.activation`` is the ``act``.
    state: :class:`RNNState` with ``h (..., H)``.
    x: input ``(..., I)``.
    activation: may restate ``params.activation``; a different value raises.

  Returns:
    ``(new_state, h')`` with ``h' (..., H)``.

  Example:
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 5, activation="relu")
    >>> state, h = jaxlstm.rnn_step(params, jaxlstm.rnn_zero_state(params, (2,)), jnp.ones((2, 3)))
    >>> h.shape, bool((h >= 0).all())
    ((2, 5), True)
  """
  check_call_activation(params, activation)
  cdt = params.w_x.dtype
  return rnn_update(params, state, x.astype(cdt) @ params.w_x, state.h.astype(cdt) @ params.w_h)


def rnn_update(params: RNNParams, state: RNNState, zx: jax.Array, zh: jax.Array) -> tuple[RNNState, jax.Array]:
  """:func:`jaxlstm.rnn_step` from its two projections on: ``zx = x @ w_x`` and ``zh = h @ w_h``, each ``(..., H)``.

  The cell record's ``update``, for recurrent dropout (:mod:`jaxlstm.regularizers`).

  Example:
    >>> from jaxlstm._src.cells.rnn import rnn_update
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 5)
    >>> state, x = jaxlstm.rnn_zero_state(params, (2,)), jnp.ones((2, 3))
    >>> bool((rnn_update(params, state, x @ params.w_x, state.h @ params.w_h)[1]
    ...       == jaxlstm.rnn_step(params, state, x)[1]).all())
    True
  """
  h = ACTIVATIONS[params.activation]((zx + zh + params.b).astype(state.h.dtype))
  return RNNState(h), h


CELL = Cell(
  name="rnn",
  params_type=RNNParams,
  state_type=RNNState,
  init=rnn_init,
  step=rnn_step,
  zero_state=rnn_zero_state,
  options_of=lambda p: {"dtype": p.dtype, "activation": p.activation},
  gates=1,
  options=("activation",),
  peers={"torch": "RNN", "keras": "SimpleRNN"},
  update=rnn_update,
)
