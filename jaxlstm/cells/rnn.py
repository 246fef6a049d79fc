r"""The vanilla (Elman) RNN cell: ``h' = act(x W_x + h W_h + b)``."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm import _checks
from jaxlstm.initializers import glorot_uniform, orthogonal_blocks
from jaxlstm.cells.lstm import state_dtype

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


class RNNParams(NamedTuple):
  """Parameters of one Elman RNN layer."""
  w_x: jax.Array  # (I, H)
  w_h: jax.Array  # (H, H)
  b: jax.Array  # (H,)

  @property
  def input_size(self) -> int:
    return self.w_x.shape[0]

  @property
  def hidden_size(self) -> int:
    return self.w_h.shape[0]

  @property
  def output_size(self) -> int:
    return self.w_h.shape[0]

  @property
  def dtype(self):
    return self.w_x.dtype


class RNNState(NamedTuple):
  """State of an Elman RNN layer."""
  h: jax.Array  # (..., H)


def rnn_init(key: jax.Array, input_size: int, hidden_size: int, *, dtype=jnp.float32) -> RNNParams:
  """Initializes an Elman RNN layer: Glorot-uniform ``w_x``, orthogonal ``w_h``, zero ``b``.

  Returns:
    :class:`RNNParams` with ``w_x (I, H)``, ``w_h (H, H)``, ``b (H,)``.
  """
  _checks.check_positive_int("input_size", input_size)
  _checks.check_positive_int("hidden_size", hidden_size)
  if not _checks.is_float(dtype):
    raise TypeError(f"dtype must be a floating-point dtype; got {jnp.dtype(dtype)}")
  k_x, k_h = jax.random.split(key)
  return RNNParams(w_x=glorot_uniform(k_x, (input_size, hidden_size), dtype),
                   w_h=orthogonal_blocks(k_h, hidden_size, 1, hidden_size, dtype),
                   b=jnp.zeros((hidden_size,), dtype))


def rnn_zero_state(params: RNNParams, batch_shape: tuple[int, ...] = (), dtype=None) -> RNNState:
  """An all-zero state ``h (*batch_shape, H)`` (float32 at least, as for the LSTM)."""
  dtype = state_dtype(params.dtype) if dtype is None else dtype
  return RNNState(jnp.zeros((*tuple(batch_shape), params.hidden_size), dtype))


def check_activation(activation: str) -> None:
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}")


def rnn_step(params: RNNParams, state: RNNState, x: jax.Array, *,
             activation: str = "tanh") -> tuple[RNNState, jax.Array]:
  r"""One Elman RNN step, :math:`h' = \mathrm{act}(x W_x + h W_h + b)`.

  Args:
    params: :class:`RNNParams`.
    state: :class:`RNNState` with ``h (..., H)``.
    x: input ``(..., I)``.
    activation: ``"tanh"`` or ``"relu"``, as PyTorch's ``nonlinearity``. Bind it
      with ``functools.partial`` to get a ``step(params, state, x)``.

  Returns:
    ``(new_state, h')`` with ``h' (..., H)``.
  """
  check_activation(activation)
  cdt = params.w_x.dtype
  z = x.astype(cdt) @ params.w_x + state.h.astype(cdt) @ params.w_h + params.b
  h = ACTIVATIONS[activation](z.astype(state.h.dtype))
  return RNNState(h), h
