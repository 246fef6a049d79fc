r"""The GRU cell, with PyTorch's semantics.

Gate layout: along the ``3H`` axis of ``w_x``, ``w_h`` and ``b`` the gates are
**r, z, n** (reset, update, candidate), as in PyTorch. The recurrent bias of
the candidate, ``b_hn``, sits *inside* the reset product,
``r * (h W_hn + b_hn)``, so it cannot be folded into ``b`` and is kept apart.
(Flax NNX's ``GRUCell`` puts it outside, which is a different function.)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxlstm._src import checks
from jaxlstm._src.cells.lstm import state_dtype
from jaxlstm._src.cells.registry import Cell
from jaxlstm._src.initializers import glorot_uniform, orthogonal_blocks
from jaxlstm._src.types import Array


class GRUParams(NamedTuple):
  """Parameters of one GRU layer; every ``3H`` axis holds the gates in the order r, z, n.

  Attributes:
    w_x: ``(I, 3H)`` input weights.
    w_h: ``(H, 3H)`` recurrent weights.
    b: ``(3H,)`` bias: ``b_ir + b_hr``, ``b_iz + b_hz`` and ``b_in`` in PyTorch's terms.
    b_hn: ``(H,)`` recurrent bias of the candidate, inside the reset product.

  Example:
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> params.w_x.shape, params.w_h.shape, params.b.shape, params.b_hn.shape
    ((3, 15), (5, 15), (15,), (5,))
  """

  w_x: Array  # (I, 3H) input weights, gates r, z, n
  w_h: Array  # (H, 3H) recurrent weights
  b: Array  # (3H,) = (b_ir + b_hr, b_iz + b_hz, b_in)
  b_hn: Array  # (H,) recurrent candidate bias, inside the reset product

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
    """The params' dtype, in which the gates are computed."""
    return self.w_x.dtype


class GRUState(NamedTuple):
  """State of a GRU layer, with any leading batch axes.

  Attributes:
    h: ``(..., H)`` hidden state, which is also the layer's output.

  Example:
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> state, hs = jaxlstm.gru(params, jnp.ones((4, 7, 3)), state=jaxlstm.GRUState(jnp.ones((4, 5))))
    >>> state.h.shape
    (4, 5)
  """

  h: jax.Array  # (..., H)


def gru_init(key: jax.Array, input_size: int, hidden_size: int, *, dtype: DTypeLike = jnp.float32) -> GRUParams:
  """Initializes a GRU layer: Glorot-uniform ``w_x``, per-gate orthogonal ``w_h``, zero biases.

  Args:
    key: PRNG key.
    input_size: ``I``.
    hidden_size: ``H``.
    dtype: dtype of every parameter.

  Returns:
    :class:`GRUParams` with ``w_x (I, 3H)``, ``w_h (H, 3H)``, ``b (3H,)``, ``b_hn (H,)``.

  Example:
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> params.w_x.shape, params.w_h.shape, float(params.b.sum())
    ((3, 15), (5, 15), 0.0)
  """
  checks.check_positive_int("input_size", input_size)
  checks.check_positive_int("hidden_size", hidden_size)
  if not checks.is_float(dtype):
    raise TypeError(f"dtype must be a floating-point dtype; got {jnp.dtype(dtype)}")
  k_x, k_h = jax.random.split(key)
  H = hidden_size
  return GRUParams(
    w_x=glorot_uniform(k_x, (input_size, 3 * H), dtype),
    w_h=orthogonal_blocks(k_h, H, 3, H, dtype),
    b=jnp.zeros((3 * H,), dtype),
    b_hn=jnp.zeros((H,), dtype),
  )


def gru_zero_state(params: GRUParams, batch_shape: tuple[int, ...] = (), dtype: DTypeLike | None = None) -> GRUState:
  """An all-zero state ``h (*batch_shape, H)``.

  Args:
    params: :class:`GRUParams`.
    batch_shape: the leading batch axes, e.g. ``(B,)``.
    dtype: the state's dtype; by default float32 for 16-bit params, else the
      params' dtype, as for :func:`jaxlstm.lstm_zero_state`.

  Returns:
    :class:`GRUState` of zeros.

  Example:
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> jaxlstm.gru_zero_state(params, (2, 4)).h.shape
    (2, 4, 5)
  """
  dtype = state_dtype(params.dtype) if dtype is None else dtype
  return GRUState(jnp.zeros((*tuple(batch_shape), params.hidden_size), dtype))


def gru_step(params: GRUParams, state: GRUState, x: jax.Array) -> tuple[GRUState, jax.Array]:
  r"""One GRU step.

  .. math::

    r &= \sigma(x W_{xr} + h W_{hr} + b_r) \\
    z &= \sigma(x W_{xz} + h W_{hz} + b_z) \\
    n &= \tanh(x W_{xn} + b_n + r \odot (h W_{hn} + b_{hn})) \\
    h' &= (1 - z) \odot n + z \odot h

  Args:
    params: :class:`GRUParams`.
    state: :class:`GRUState` with ``h (..., H)``.
    x: input ``(..., I)``.

  Returns:
    ``(new_state, h')`` with ``h' (..., H)``.

  References:
    Cho et al. (2014), Learning phrase representations using RNN
    encoder-decoder for statistical machine translation.

  Example:
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> state, h = jaxlstm.gru_step(params, jaxlstm.gru_zero_state(params, (2,)), jnp.ones((2, 3)))
    >>> h.shape, bool((h == state.h).all())
    ((2, 5), True)
  """
  cdt = params.w_x.dtype
  return gru_update(params, state, x.astype(cdt) @ params.w_x, state.h.astype(cdt) @ params.w_h)


def gru_update(params: GRUParams, state: GRUState, zx: jax.Array, zh: jax.Array) -> tuple[GRUState, jax.Array]:
  """:func:`jaxlstm.gru_step` from its two projections on: ``zx = x @ w_x`` and ``zh = h @ w_h``, each ``(..., 3H)``.

  The cell record's ``update``, for recurrent dropout with a mask per gate (:mod:`jaxlstm.regularizers`).

  Example:
    >>> from jaxlstm._src.cells.gru import gru_update
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> state, x = jaxlstm.gru_zero_state(params, (2,)), jnp.ones((2, 3))
    >>> bool((gru_update(params, state, x @ params.w_x, state.h @ params.w_h)[1]
    ...       == jaxlstm.gru_step(params, state, x)[1]).all())
    True
  """
  h = state.h
  zx = (zx + params.b).astype(h.dtype)
  zh = zh.astype(h.dtype)
  xr, xz, xn = jnp.split(zx, 3, axis=-1)
  hr, hz, hn = jnp.split(zh, 3, axis=-1)
  r = jax.nn.sigmoid(xr + hr)
  z = jax.nn.sigmoid(xz + hz)
  n = jnp.tanh(xn + r * (hn + params.b_hn.astype(h.dtype)))
  h_new = (1.0 - z) * n + z * h
  return GRUState(h_new), h_new


CELL = Cell(
  name="gru",
  params_type=GRUParams,
  state_type=GRUState,
  init=gru_init,
  step=gru_step,
  zero_state=gru_zero_state,
  options_of=lambda p: {"dtype": p.dtype},
  gates=3,
  update=gru_update,
  peers={"torch": "GRU", "keras": "GRU", "flax": "GRUCell"},
)
