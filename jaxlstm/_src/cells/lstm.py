r"""The LSTM cell, with optional peepholes, layer normalization and projection.

Gate layout, stated once for the whole package: along the ``4H`` axis of
``w_x``, ``w_h`` and ``b`` the gates are in the order **i, f, g, o** (input,
forget, cell candidate, output), the same as PyTorch, Flax and Equinox.
Weights are ``(in, out)``, so a step is ``x @ w_x + h @ w_h + b``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxlstm._src import checks
from jaxlstm._src.cells.registry import Cell
from jaxlstm._src.initializers import glorot_uniform, orthogonal_blocks
from jaxlstm._src.types import Array

# Added to the variance in layer normalization, as in ``torch.nn.LayerNorm``.
LAYER_NORM_EPS = 1e-5


class LayerNormParams(NamedTuple):
  """Gains and bias of a LayerNorm LSTM (Ba et al., 2016): the ``layer_norm`` field of :class:`LSTMParams`.

  Attributes:
    x_scale: ``(4H,)`` gain on ``LN(x @ w_x)``.
    h_scale: ``(4H,)`` gain on ``LN(h @ w_h)``.
    c_scale: ``(H,)`` gain on ``LN(c)`` before the output ``tanh``.
    c_bias: ``(H,)`` bias added after that gain.

  Example:
    >>> ln = jaxlstm.lstm_init(jax.random.key(0), 3, 5, layer_norm=True).layer_norm
    >>> ln.x_scale.shape, ln.h_scale.shape, ln.c_scale.shape, ln.c_bias.shape
    ((20,), (20,), (5,), (5,))
  """

  x_scale: Array  # (4H,) gain on LN(x @ w_x)
  h_scale: Array  # (4H,) gain on LN(h @ w_h)
  c_scale: Array  # (H,) gain on LN(c) before the output tanh
  c_bias: Array  # (H,)


class LSTMParams(NamedTuple):
  """Parameters of one LSTM layer; every ``4H`` axis holds the gates in the order i, f, g, o.

  ``P`` is ``H``, or ``proj_size`` when the layer has a projection.

  Attributes:
    w_x: ``(I, 4H)`` input weights.
    w_h: ``(P, 4H)`` recurrent weights.
    b: ``(4H,)`` bias.
    peephole: ``(3, H)`` diagonal peephole weights, rows i, f, o; ``None`` without peepholes.
    layer_norm: :class:`LayerNormParams`; ``None`` without layer normalization.
    w_proj: ``(H, P)`` output projection; ``None`` without a projection.

  Example:
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5, proj_size=2)
    >>> params.w_x.shape, params.w_h.shape, params.w_proj.shape
    ((3, 20), (2, 20), (5, 2))
    >>> params.input_size, params.hidden_size, params.output_size, params.dtype
    (3, 5, 2, dtype('float32'))
  """

  w_x: Array  # (I, 4H) input weights, gates i, f, g, o
  w_h: Array  # (P, 4H) recurrent weights
  b: Array  # (4H,) bias
  peephole: Array | None = None  # (3, H) diagonal peepholes, rows i, f, o
  layer_norm: LayerNormParams | None = None
  w_proj: Array | None = None  # (H, P) output projection

  @property
  def input_size(self) -> int:
    """``I``, the size of each input vector."""
    return self.w_x.shape[0]

  @property
  def hidden_size(self) -> int:
    """``H``, the size of the cell state."""
    return self.w_x.shape[1] // 4

  @property
  def output_size(self) -> int:
    """Size of ``h``: ``proj_size`` with a projection, else ``hidden_size``."""
    return self.w_h.shape[0]

  @property
  def dtype(self):
    """The params' dtype, in which the gates are computed."""
    return self.w_x.dtype


class LSTMState(NamedTuple):
  """State of an LSTM layer, with any leading batch axes.

  Attributes:
    h: ``(..., P)`` hidden state, which is also the layer's output.
    c: ``(..., H)`` cell state.

  Example:
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5, proj_size=2)
    >>> state, hs = jaxlstm.lstm(params, jnp.ones((4, 7, 3)))
    >>> state.h.shape, state.c.shape, bool((state.h == hs[:, -1]).all())
    ((4, 2), (4, 5), True)
  """

  h: jax.Array  # (..., P) hidden state (the output)
  c: jax.Array  # (..., H) cell state


def lstm_init(
  key: jax.Array,
  input_size: int,
  hidden_size: int,
  *,
  peephole: bool = False,
  layer_norm: bool = False,
  proj_size: int | None = None,
  forget_bias: float = 1.0,
  dtype: DTypeLike = jnp.float32,
) -> LSTMParams:
  """Initializes an LSTM layer.

  ``w_x`` is Glorot-uniform. ``w_h`` is orthogonal per gate block (one orthogonal
  ``(P, H)`` matrix per gate, not one over the whole ``(P, 4H)`` matrix). ``b``
  is zero except the forget block, which is ``forget_bias``: a positive value
  keeps the memory open early in training (Gers et al., 2000; Jozefowicz et al.,
  2015). Peepholes are Glorot-uniform over ``H`` as in Keras'
  ``PeepholeLSTMCell``; layer-norm gains start at one and its bias at zero;
  ``w_proj`` is Glorot-uniform.

  Args:
    key: PRNG key.
    input_size: ``I``, the size of each input vector.
    hidden_size: ``H``, the size of the cell state.
    peephole: add diagonal peephole connections (see :func:`lstm_step`).
    layer_norm: normalize the input and recurrent projections and the cell
      state (Ba et al., 2016).
    proj_size: if given, ``h`` is projected from ``H`` down to ``P = proj_size``
      features, as with PyTorch's ``proj_size``.
    forget_bias: initial value of the forget-gate bias.
    dtype: dtype of every parameter.

  Returns:
    :class:`LSTMParams` with ``w_x (I, 4H)``, ``w_h (P, 4H)``, ``b (4H,)`` and,
    when asked for, ``peephole (3, H)``, ``layer_norm`` and ``w_proj (H, P)``.

  Example:
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5, peephole=True)
    >>> params.w_x.shape, params.w_h.shape, params.b.shape, params.peephole.shape
    ((3, 20), (5, 20), (20,), (3, 5))
  """
  checks.check_positive_int("input_size", input_size)
  checks.check_positive_int("hidden_size", hidden_size)
  if proj_size is not None:
    checks.check_positive_int("proj_size", proj_size)
    if proj_size >= hidden_size:
      raise ValueError(f"proj_size must be smaller than hidden_size={hidden_size}; got {proj_size}")
  if not checks.is_float(dtype):
    raise TypeError(f"dtype must be a floating-point dtype; got {jnp.dtype(dtype)}")
  H = hidden_size
  P = H if proj_size is None else proj_size
  k_x, k_h, k_p, k_proj = jax.random.split(key, 4)
  b = jnp.zeros((4 * H,), dtype).at[H : 2 * H].set(forget_bias)
  return LSTMParams(
    w_x=glorot_uniform(k_x, (input_size, 4 * H), dtype),
    w_h=orthogonal_blocks(k_h, P, 4, H, dtype),
    b=b,
    peephole=(
      jax.random.uniform(k_p, (3, H), jnp.float32, -((3.0 / H) ** 0.5), (3.0 / H) ** 0.5).astype(dtype)
      if peephole
      else None
    ),
    layer_norm=(
      LayerNormParams(
        jnp.ones((4 * H,), dtype), jnp.ones((4 * H,), dtype), jnp.ones((H,), dtype), jnp.zeros((H,), dtype)
      )
      if layer_norm
      else None
    ),
    w_proj=None if proj_size is None else glorot_uniform(k_proj, (H, P), dtype),
  )


def lstm_zero_state(params: LSTMParams, batch_shape: tuple[int, ...] = (), dtype: DTypeLike | None = None) -> LSTMState:
  """An all-zero state: ``h (*batch_shape, P)`` and ``c (*batch_shape, H)``.

  Args:
    params: :class:`LSTMParams`, which give ``P``, ``H`` and the default dtype.
    batch_shape: the leading batch axes, e.g. ``(B,)``; ``()`` for one sequence.
    dtype: the state's dtype. By default float32 for bfloat16/float16 params,
      so that the carry keeps float32 precision, and the params' dtype otherwise.

  Returns:
    :class:`LSTMState` of zeros.

  Example:
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5, dtype=jnp.bfloat16)
    >>> state = jaxlstm.lstm_zero_state(params, (2,))
    >>> state.h.shape, state.c.shape, state.c.dtype
    ((2, 5), (2, 5), dtype('float32'))
  """
  dtype = state_dtype(params.dtype) if dtype is None else dtype
  batch_shape = tuple(batch_shape)
  return LSTMState(
    jnp.zeros((*batch_shape, params.output_size), dtype), jnp.zeros((*batch_shape, params.hidden_size), dtype)
  )


def state_dtype(param_dtype):
  """The carry dtype for a compute dtype: float32 for 16-bit floats, else unchanged.

  Example:
    >>> from jaxlstm._src.cells.lstm import state_dtype
    >>> state_dtype(jnp.bfloat16), state_dtype(jnp.float32)
    (dtype('float32'), dtype('float32'))
  """
  param_dtype = jnp.dtype(param_dtype)
  return jnp.dtype(jnp.float32) if param_dtype.itemsize < 4 else param_dtype


def layer_norm(z: jax.Array, scale: Array, bias: Array | None = None) -> jax.Array:
  """Normalizes the last axis to zero mean and unit variance, then scales and, if given, shifts.

  Args:
    z: ``(..., F)`` values.
    scale: ``(F,)`` gain.
    bias: ``(F,)`` shift, or ``None``.

  Returns:
    ``(z - mean) / sqrt(var + LAYER_NORM_EPS) * scale (+ bias)``, shape ``(..., F)``.

  Example:
    >>> from jaxlstm._src.cells.lstm import layer_norm
    >>> layer_norm(jnp.array([1.0, 3.0]), jnp.ones(2))
    Array([-0.99999..., 0.99999...], dtype=float32)
  """
  mean = jnp.mean(z, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(z - mean), axis=-1, keepdims=True)
  out = (z - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS) * scale
  return out if bias is None else out + bias


def lstm_step(params: LSTMParams, state: LSTMState, x: jax.Array) -> tuple[LSTMState, jax.Array]:
  r"""One LSTM step.

  .. math::

    z &= x W_x + h_{t-1} W_h + b \\
    i &= \sigma(z_i + p_i \odot c_{t-1}) \qquad
    f = \sigma(z_f + p_f \odot c_{t-1}) \qquad
    g = \tanh(z_g) \\
    c_t &= f \odot c_{t-1} + i \odot g \\
    o &= \sigma(z_o + p_o \odot c_t) \\
    h_t &= o \odot \tanh(c_t) \quad (\text{then } h_t W_{proj} \text{ with a projection})

  The peephole terms ``p`` are present only when ``params.peephole`` is set.
  The input and forget gates read the previous cell state ``c_{t-1}`` and the
  output gate reads the new one ``c_t``: the form of Gers, Schraudolph and
  Schmidhuber (2002) and of TensorFlow's ``PeepholeLSTMCell``. Some texts write
  ``W_co c_{t-1}`` for the output gate; that variant lets ``o`` see only stale
  memory, and is not what this function computes.

  With ``params.layer_norm``, following Ba et al. (2016),
  ``z = LN(x W_x) * s_x + LN(h W_h) * s_h + b`` and
  ``h_t = o * tanh(LN(c_t) * s_c + b_c)``; the carried ``c_t`` itself is not
  normalized. ``LN`` normalizes over all ``4H`` (or ``H``) features.

  Args:
    params: :class:`LSTMParams`.
    state: :class:`LSTMState` with ``h (..., P)`` and ``c (..., H)``.
    x: input of shape ``(..., I)``; any leading batch dimensions, which must
      broadcast with the state's.

  Returns:
    ``(new_state, h)`` where ``h (..., P)`` is also ``new_state.h``. Gates are
    computed in the params' dtype and the state is updated in its own dtype
    (float32 under bfloat16 params).

  References:
    Hochreiter & Schmidhuber (1997), Long short-term memory.
    Gers, Schraudolph & Schmidhuber (2002), Learning precise timing with LSTM
    recurrent networks. Ba, Kiros & Hinton (2016), Layer normalization.
    Sak, Senior & Beaufays (2014), LSTM recurrent neural network architectures
    for large scale acoustic modeling (projection).

  Example:
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> state = jaxlstm.lstm_zero_state(params, (2,))
    >>> new, h = jaxlstm.lstm_step(params, state, jnp.ones((2, 3)))
    >>> h.shape, new.c.shape, bool((h == new.h).all())
    ((2, 5), (2, 5), True)

    It is a scan body: unrolling it over time-major inputs ``(T, B, I)`` is one ``lax.scan``.

    >>> final, hs = jax.lax.scan(lambda s, x: jaxlstm.lstm_step(params, s, x), state, jnp.ones((7, 2, 3)))
    >>> hs.shape
    (7, 2, 5)
  """
  cdt = params.w_x.dtype
  return lstm_update(params, state, x.astype(cdt) @ params.w_x, state.h.astype(cdt) @ params.w_h)


def lstm_update(params: LSTMParams, state: LSTMState, zx: jax.Array, zh: jax.Array) -> tuple[LSTMState, jax.Array]:
  """:func:`jaxlstm.lstm_step` from its two projections on: ``zx = x @ w_x`` and ``zh = h @ w_h``, each ``(..., 4H)``.

  The cell record's ``update``: recurrent dropout with a mask per gate (:mod:`jaxlstm.regularizers`)
  computes the projections from masked copies of ``x`` and ``h``, then finishes the step here.

  Example:
    >>> from jaxlstm._src.cells.lstm import lstm_update
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> state, x = jaxlstm.lstm_zero_state(params, (2,)), jnp.ones((2, 3))
    >>> new, h = lstm_update(params, state, x @ params.w_x, state.h @ params.w_h)
    >>> bool((h == jaxlstm.lstm_step(params, state, x)[1]).all())
    True
  """
  cdt = params.w_x.dtype
  c_prev = state.c
  if params.layer_norm is not None:
    ln = params.layer_norm
    zx = layer_norm(zx, ln.x_scale)
    zh = layer_norm(zh, ln.h_scale)
  z = (zx + zh + params.b).astype(c_prev.dtype)
  zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
  if params.peephole is not None:
    p = params.peephole.astype(c_prev.dtype)
    zi = zi + p[0] * c_prev
    zf = zf + p[1] * c_prev
  c = jax.nn.sigmoid(zf) * c_prev + jax.nn.sigmoid(zi) * jnp.tanh(zg)
  if params.peephole is not None:
    zo = zo + p[2] * c
  c_out = c
  if params.layer_norm is not None:
    ln = params.layer_norm
    c_out = layer_norm(c, ln.c_scale.astype(c.dtype), ln.c_bias.astype(c.dtype))
  h = jax.nn.sigmoid(zo) * jnp.tanh(c_out)
  if params.w_proj is not None:
    h = (h.astype(cdt) @ params.w_proj).astype(c.dtype)
  return LSTMState(h, c), h


def lstm_options(params: LSTMParams) -> dict:
  """The :func:`lstm_init` options that give ``params``' layout (``forget_bias`` is a value, not a layout).

  Example:
    >>> from jaxlstm._src.cells.lstm import lstm_options
    >>> lstm_options(jaxlstm.lstm_init(jax.random.key(0), 3, 5, proj_size=2))
    {'dtype': dtype('float32'), 'peephole': False, 'layer_norm': False, 'proj_size': 2}
  """
  return {
    "dtype": params.dtype,
    "peephole": params.peephole is not None,
    "layer_norm": params.layer_norm is not None,
    "proj_size": None if params.w_proj is None else params.output_size,
  }


CELL = Cell(
  name="lstm",
  params_type=LSTMParams,
  state_type=LSTMState,
  init=lstm_init,
  step=lstm_step,
  zero_state=lstm_zero_state,
  options_of=lstm_options,
  gates=4,
  update=lstm_update,
  options=("peephole", "layer_norm", "proj_size", "forget_bias"),
  peers={"torch": "LSTM", "keras": "LSTM", "flax": "OptimizedLSTMCell"},
)
