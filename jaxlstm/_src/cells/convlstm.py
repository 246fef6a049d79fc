r"""The convolutional LSTM of Shi et al. (2015), with the semantics of Keras' ``ConvLSTM1D`` and ``ConvLSTM2D``.

Two registered cells share this file, ``convlstm1d`` and ``convlstm2d``, one
per spatial rank: the rank fixes how many trailing axes a step has
(:attr:`jaxlstm.Cell.feature_axes`, ``rank + 1``), which every seam reads
from the cell's record, so each rank is a cell of its own with a params type
of its own (:class:`ConvLSTM1DParams`, :class:`ConvLSTM2DParams`, both
:class:`ConvLSTMParams`). The maths, :func:`convlstm_step`, is one function
for both.

.. math::

  z &= W_x \star x_t + b + W_h \circledast h_{t-1} \qquad
  (z_i, z_f, z_g, z_o) = \operatorname{split}_4(z) \\
  c_t &= \sigma(z_f + \delta) \odot c_{t-1} + \sigma(z_i) \odot \tanh(z_g) \qquad
  h_t = \sigma(z_o) \odot \tanh(c_t)

where :math:`\star` is the input convolution, with the layer's ``padding``
(``"same"`` or ``"valid"``), ``strides`` and ``dilation``, and
:math:`\circledast` the recurrent one, always ``"same"`` with stride 1 and no
dilation, as Keras' (``ConvLSTMCell.recurrent_conv``): the state keeps the
spatial sizes that the input convolution gives, so valid and strided layers
are consistent from step to step. :math:`\delta` is ``forget_offset``, a
static field: 0 for Keras' (and the paper's) cell, 1 for Flax's
``ConvLSTMCell``, which adds 1 to the forget gate at run time; it is stored
rather than folded into ``b`` so that both converters are exact.

Layout: channels last, inputs ``(*batch, T, *spatial, C)``, state leaves
``(*batch, *spatial', F)``. ``w_x`` is ``(*kernel_size, C, 4F)`` and ``w_h``
``(*kernel_size, F, 4F)``, Keras' own kernel layout, and along their ``4F``
axis (and ``b``'s) the gates are **i, f, g, o**: Keras' i, f, c, o, and our
LSTM's. No peepholes (the paper's :math:`W_c \circ c` terms), as in Keras.

Init is our LSTM's: Glorot-uniform ``w_x`` (with Keras' fans for a
convolution kernel, ``prod(kernel_size) * C`` in and ``prod(kernel_size) *
4F`` out), an orthogonal ``w_h`` block per gate (Keras orthogonalises the
whole ``(prod(kernel_size) * F, 4F)`` matrix at once), and ``forget_bias``
(1, Keras' ``unit_forget_bias``) on the forget gate.

References:
  Shi, Chen, Wang, Yeung, Wong & Woo (2015), Convolutional LSTM network: a
  machine learning approach for precipitation nowcasting. NeurIPS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import DTypeLike

from jaxlstm._src import checks
from jaxlstm._src.cells.lstm import state_dtype
from jaxlstm._src.cells.registry import Cell, static_fields
from jaxlstm._src.initializers import orthogonal_blocks
from jaxlstm._src.types import Array

PADDINGS = ("same", "valid")
# lax's dimension numbers for channels-last inputs and (*kernel, in, out) kernels, by spatial rank.
_LAYOUTS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


class ConvLSTMParams(NamedTuple):
  """Parameters of one ConvLSTM layer (either rank); the ``4F`` axes hold the gates i, f, g, o.

  The registered cells use the two subclasses :class:`ConvLSTM1DParams` and :class:`ConvLSTM2DParams`;
  ``isinstance(p, jaxlstm.ConvLSTMParams)`` holds for both.

  Attributes:
    w_x: ``(*kernel_size, C, 4F)`` input kernel.
    w_h: ``(*kernel_size, F, 4F)`` recurrent kernel.
    b: ``(4F,)`` bias.
    padding: static; the input convolution's ``"same"`` or ``"valid"``.
    strides: static; the input convolution's strides, one per spatial axis.
    dilation: static; the input convolution's kernel dilation, one per spatial axis.
    forget_offset: static; a constant added to the forget gate's pre-activation at run time: 0 (Keras),
      1 (Flax's ``ConvLSTMCell``).

  Example:
    >>> params = jaxlstm.convlstm2d_init(jax.random.key(0), 3, 4, kernel_size=(3, 5), padding="valid")
    >>> params.w_x.shape, params.w_h.shape, params.b.shape, params.kernel_size, params.padding
    ((3, 5, 3, 16), (3, 5, 4, 16), (16,), (3, 5), 'valid')
    >>> isinstance(params, jaxlstm.ConvLSTMParams), params.rank, params.input_size, params.hidden_size
    (True, 2, 3, 4)
  """

  w_x: Array  # (*K, C, 4F) input kernel, gates i, f, g, o
  w_h: Array  # (*K, F, 4F) recurrent kernel
  b: Array  # (4F,)
  padding: str  # static: the input convolution's "same" or "valid"; the recurrent one is always "same"
  strides: tuple  # static: the input convolution's, one per spatial axis; the recurrent one's are 1
  dilation: tuple  # static: the input convolution's, one per spatial axis; the recurrent one has none
  forget_offset: float = 0.0  # static: added to z_f at run time, 1.0 in Flax's ConvLSTMCell

  @property
  def rank(self) -> int:
    """The number of spatial axes, 1 or 2."""
    return len(self.w_x.shape) - 2

  @property
  def kernel_size(self) -> tuple[int, ...]:
    """The kernels' spatial size, one entry per spatial axis."""
    return tuple(self.w_x.shape[:-2])

  @property
  def input_size(self) -> int:
    """``C``, the input's channels."""
    return self.w_x.shape[-2]

  @property
  def hidden_size(self) -> int:
    """``F``, the state's channels (Keras' ``filters``)."""
    return self.w_h.shape[-2]

  @property
  def output_size(self) -> int:
    """The channels of each output, ``F``."""
    return self.w_h.shape[-2]

  @property
  def dtype(self):
    """The params' dtype, in which the convolutions are computed."""
    return self.w_x.dtype


_STATIC = ("padding", "strides", "dilation", "forget_offset")


@static_fields(*_STATIC)
class ConvLSTM1DParams(ConvLSTMParams):
  """:class:`ConvLSTMParams` of a ``convlstm1d`` layer: inputs ``(*batch, T, W, C)``.

  Attributes:
    w_x: ``(K, C, 4F)`` input kernel, gates i, f, g, o.
    w_h: ``(K, F, 4F)`` recurrent kernel.
    b: ``(4F,)`` bias.
    padding, strides, dilation, forget_offset: static, as :class:`ConvLSTMParams`'.

  Example:
    >>> params = jaxlstm.convlstm1d_init(jax.random.key(0), 3, 4, kernel_size=5)
    >>> type(params).__name__, params.w_x.shape, params.strides
    ('ConvLSTM1DParams', (5, 3, 16), (1,))
  """

  __slots__ = ()


@static_fields(*_STATIC)
class ConvLSTM2DParams(ConvLSTMParams):
  """:class:`ConvLSTMParams` of a ``convlstm2d`` layer: inputs ``(*batch, T, H, W, C)``.

  Attributes:
    w_x: ``(KH, KW, C, 4F)`` input kernel, gates i, f, g, o.
    w_h: ``(KH, KW, F, 4F)`` recurrent kernel.
    b: ``(4F,)`` bias.
    padding, strides, dilation, forget_offset: static, as :class:`ConvLSTMParams`'.

  Example:
    >>> params = jaxlstm.convlstm2d_init(jax.random.key(0), 3, 4)
    >>> type(params).__name__, params.w_x.shape, params.padding, params.dilation
    ('ConvLSTM2DParams', (3, 3, 3, 16), 'same', (1, 1))
  """

  __slots__ = ()


_TYPES = {1: ConvLSTM1DParams, 2: ConvLSTM2DParams}


class ConvLSTMState(NamedTuple):
  """State of a ConvLSTM layer: two feature maps, with any leading batch axes.

  Attributes:
    h: ``(..., *spatial', F)`` hidden state, which is also the layer's output.
    c: ``(..., *spatial', F)`` cell state.

  Example:
    >>> params = jaxlstm.convlstm2d_init(jax.random.key(0), 3, 4)
    >>> state, hs = jaxlstm.layer(params, jnp.ones((2, 5, 8, 8, 3)))
    >>> state.h.shape, state.c.shape, hs.shape
    ((2, 8, 8, 4), (2, 8, 8, 4), (2, 5, 8, 8, 4))
  """

  h: jax.Array  # (..., *S', F)
  c: jax.Array  # (..., *S', F)


def spatial_tuple(name: str, value, rank: int) -> tuple[int, ...]:
  """``value`` as a tuple of ``rank`` positive ints: an int repeats, a sequence must have ``rank`` entries.

  Raises:
    ValueError: naming ``name``, for anything else.

  Example:
    >>> from jaxlstm._src.cells.convlstm import spatial_tuple
    >>> spatial_tuple("strides", 2, 2), spatial_tuple("kernel_size", [3, 5], 2)
    ((2, 2), (3, 5))
    >>> spatial_tuple("kernel_size", (3, 3), 1)
    Traceback (most recent call last):
    ValueError: kernel_size must be a positive int or 1 of them; got (3, 3)
  """
  items = (value,) * rank if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
  try:
    items = tuple(items)
  except TypeError:
    items = ()
  if len(items) != rank or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in items):
    raise ValueError(f"{name} must be a positive int or {rank} of them; got {value!r}")
  return tuple(int(v) for v in items)


def check_padding(padding) -> str:
  """``padding`` in lower case, which must be ``"same"`` or ``"valid"`` (in any case, so Flax's ``"SAME"`` too).

  Example:
    >>> from jaxlstm._src.cells.convlstm import check_padding
    >>> check_padding("SAME")
    'same'
    >>> check_padding("causal")
    Traceback (most recent call last):
    ValueError: padding must be 'same' or 'valid'; got 'causal'
  """
  if not isinstance(padding, str) or padding.lower() not in PADDINGS:
    raise ValueError(f"padding must be 'same' or 'valid'; got {padding!r}")
  return padding.lower()


def _init(
  rank: int, key, input_size, hidden_size, *, kernel_size, padding, strides, dilation, forget_bias, forget_offset, dtype
) -> ConvLSTMParams:
  checks.check_positive_int("input_size", input_size)
  checks.check_positive_int("hidden_size", hidden_size)
  if not checks.is_float(dtype):
    raise TypeError(f"dtype must be a floating-point dtype; got {jnp.dtype(dtype)}")
  K = spatial_tuple("kernel_size", kernel_size, rank)
  strides = spatial_tuple("strides", strides, rank)
  dilation = spatial_tuple("dilation", dilation, rank)
  padding = check_padding(padding)
  if isinstance(forget_offset, bool) or not isinstance(forget_offset, (int, float)):
    raise TypeError(f"forget_offset must be a float; got {forget_offset!r}")
  C, F, k = input_size, hidden_size, math.prod(K)
  k_x, k_h = jax.random.split(key)
  # Keras' fans for a convolution kernel: the receptive field counts on both sides.
  limit = (6.0 / (k * C + k * 4 * F)) ** 0.5
  w_x = jax.random.uniform(k_x, (*K, C, 4 * F), jnp.float32, -limit, limit).astype(dtype)
  w_h = orthogonal_blocks(k_h, k * F, 4, F, jnp.float32).reshape(*K, F, 4 * F).astype(dtype)
  b = jnp.zeros((4 * F,), dtype).at[F : 2 * F].set(forget_bias)
  return _TYPES[rank](
    w_x, w_h, b, padding=padding, strides=strides, dilation=dilation, forget_offset=float(forget_offset)
  )


def convlstm1d_init(
  key: jax.Array,
  input_size: int,
  hidden_size: int,
  *,
  kernel_size: int | Sequence[int] = 3,
  padding: str = "same",
  strides: int | Sequence[int] = 1,
  dilation: int | Sequence[int] = 1,
  forget_bias: float = 1.0,
  forget_offset: float = 0.0,
  dtype: DTypeLike = jnp.float32,
) -> ConvLSTM1DParams:
  """Initializes a ConvLSTM1D layer (inputs ``(*batch, T, W, C)``); init as the module docstring says.

  Args:
    key: PRNG key.
    input_size: ``C``, the input's channels.
    hidden_size: ``F``, the state's channels (Keras' ``filters``).
    kernel_size: an int or a 1-tuple, the kernels' width.
    padding: the input convolution's ``"same"`` (Keras' default is ``"valid"``) or ``"valid"``.
    strides: the input convolution's stride.
    dilation: the input convolution's kernel dilation (Keras' ``dilation_rate``).
    forget_bias: the forget gate's initial bias (Keras' ``unit_forget_bias``).
    forget_offset: added to the forget gate at run time; 1 gives Flax's ``ConvLSTMCell``.
    dtype: dtype of every parameter.

  Returns:
    :class:`ConvLSTM1DParams` with ``w_x (K, C, 4F)``, ``w_h (K, F, 4F)``, ``b (4F,)``.

  Raises:
    ValueError: a size, kernel size, stride, dilation or padding that is not one.

  Example:
    >>> params = jaxlstm.convlstm1d_init(jax.random.key(0), 2, 3, kernel_size=3, strides=2, padding="valid")
    >>> state, hs = jaxlstm.layer(params, jnp.ones((4, 6, 9, 2)))  # W = 9 -> (9 - 3) // 2 + 1 = 4
    >>> hs.shape, float(params.b[3:6].min())
    ((4, 6, 4, 3), 1.0)
  """
  params = _init(
    1,
    key,
    input_size,
    hidden_size,
    kernel_size=kernel_size,
    padding=padding,
    strides=strides,
    dilation=dilation,
    forget_bias=forget_bias,
    forget_offset=forget_offset,
    dtype=dtype,
  )
  assert isinstance(params, ConvLSTM1DParams)  # _TYPES[1]
  return params


def convlstm2d_init(
  key: jax.Array,
  input_size: int,
  hidden_size: int,
  *,
  kernel_size: int | Sequence[int] = 3,
  padding: str = "same",
  strides: int | Sequence[int] = 1,
  dilation: int | Sequence[int] = 1,
  forget_bias: float = 1.0,
  forget_offset: float = 0.0,
  dtype: DTypeLike = jnp.float32,
) -> ConvLSTM2DParams:
  """Initializes a ConvLSTM2D layer (inputs ``(*batch, T, H, W, C)``); init as the module docstring says.

  Args:
    key: PRNG key.
    input_size: ``C``, the input's channels.
    hidden_size: ``F``, the state's channels (Keras' ``filters``).
    kernel_size: an int or a pair, the kernels' height and width.
    padding: the input convolution's ``"same"`` (Keras' default is ``"valid"``) or ``"valid"``.
    strides: an int or a pair, the input convolution's strides.
    dilation: an int or a pair, the input convolution's kernel dilation (Keras' ``dilation_rate``).
    forget_bias: the forget gate's initial bias (Keras' ``unit_forget_bias``).
    forget_offset: added to the forget gate at run time; 1 gives Flax's ``ConvLSTMCell``.
    dtype: dtype of every parameter.

  Returns:
    :class:`ConvLSTM2DParams` with ``w_x (KH, KW, C, 4F)``, ``w_h (KH, KW, F, 4F)``, ``b (4F,)``.

  Raises:
    ValueError: a size, kernel size, stride, dilation or padding that is not one.

  Example:
    >>> params = jaxlstm.convlstm2d_init(jax.random.key(0), 1, 4, kernel_size=(3, 3))
    >>> params.w_x.shape, params.w_h.shape, params.strides, params.forget_offset
    ((3, 3, 1, 16), (3, 3, 4, 16), (1, 1), 0.0)
  """
  params = _init(
    2,
    key,
    input_size,
    hidden_size,
    kernel_size=kernel_size,
    padding=padding,
    strides=strides,
    dilation=dilation,
    forget_bias=forget_bias,
    forget_offset=forget_offset,
    dtype=dtype,
  )
  assert isinstance(params, ConvLSTM2DParams)  # _TYPES[2]
  return params


def output_spatial(params: ConvLSTMParams, spatial: tuple[int, ...]) -> tuple[int, ...]:
  """The state's spatial sizes for inputs of spatial sizes ``spatial``: the input convolution's output sizes.

  ``"same"``: ``ceil(n / s)``; ``"valid"``: ``ceil((n - d (k - 1)) / s)``, as ``lax`` and Keras compute them.

  Raises:
    ValueError: ``spatial`` has the wrong rank, or with ``"valid"`` an axis is smaller than the dilated kernel.

  Example:
    >>> from jaxlstm._src.cells.convlstm import output_spatial
    >>> params = jaxlstm.convlstm2d_init(jax.random.key(0), 1, 2, kernel_size=3, padding="valid", strides=2)
    >>> output_spatial(params, (9, 8))
    (4, 3)
    >>> output_spatial(params, (2, 8))
    Traceback (most recent call last):
    ValueError: the input's spatial axis 0 has size 2, smaller than the kernel's 3 (dilated), which
      padding='valid' needs
  """
  spatial = tuple(spatial)
  if len(spatial) != params.rank:
    raise ValueError(f"the input must have {params.rank} spatial axes for this ConvLSTM; got {spatial}")
  out = []
  for axis, (n, k, s, d) in enumerate(zip(spatial, params.kernel_size, params.strides, params.dilation)):
    if params.padding == "valid":
      n = n - d * (k - 1)
      if n < 1:
        raise ValueError(
          f"the input's spatial axis {axis} has size {n + d * (k - 1)}, smaller than the kernel's "
          f"{d * (k - 1) + 1} (dilated), which padding='valid' needs"
        )
    out.append(-(-n // s))
  return tuple(out)


def convlstm_zero_state(
  params: ConvLSTMParams, batch_shape: tuple[int, ...] = (), dtype: DTypeLike | None = None
) -> ConvLSTMState:
  """An all-zero state for inputs whose leading axes are ``batch_shape``: ``(*batch, *spatial)``.

  The state's spatial sizes are those the input convolution gives (:func:`jaxlstm.zero_state` says why
  ``batch_shape`` ends with the input's spatial axes, not the state's).

  Args:
    params: :class:`ConvLSTMParams`.
    batch_shape: the batch axes followed by the input's ``rank`` spatial axes, e.g. ``(B, H, W)``.
    dtype: the state's dtype; by default float32 for 16-bit params, else the params' dtype.

  Returns:
    :class:`ConvLSTMState` with ``h`` and ``c`` ``(*batch, *spatial', F)``.

  Raises:
    ValueError: ``batch_shape`` has fewer than ``rank`` axes, or an input too small for a ``"valid"`` kernel.

  Example:
    >>> params = jaxlstm.convlstm2d_init(jax.random.key(0), 3, 4, padding="valid")
    >>> jaxlstm.convlstm_zero_state(params, (2, 8, 6)).h.shape  # a 3x3 valid kernel: 8x6 -> 6x4
    (2, 6, 4, 4)
  """
  batch_shape = tuple(batch_shape)
  if len(batch_shape) < params.rank:
    raise ValueError(
      f"batch_shape must end with the input's {params.rank} spatial axes for a ConvLSTM "
      f"(e.g. (B, *spatial)); got {batch_shape}"
    )
  lead, spatial = batch_shape[: len(batch_shape) - params.rank], batch_shape[len(batch_shape) - params.rank :]
  dtype = state_dtype(params.dtype) if dtype is None else dtype
  shape = (*lead, *output_spatial(params, spatial), params.hidden_size)
  return ConvLSTMState(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def _conv(x: jax.Array, w: Array, strides, padding: str, dilation) -> jax.Array:
  """A channels-last convolution of ``x (N, *S, C)`` with ``w (*K, C, O)``."""
  return lax.conv_general_dilated(
    x,
    w,  # type: ignore[arg-type]  # lax takes NumPy arrays too, though its hint names jax.Array only
    window_strides=strides,
    padding=padding.upper(),
    rhs_dilation=dilation,
    dimension_numbers=_LAYOUTS[len(strides)],
  )


def convlstm_step(params: ConvLSTMParams, state: ConvLSTMState, x: jax.Array) -> tuple[ConvLSTMState, jax.Array]:
  r"""One ConvLSTM step, the equations of the module docstring.

  The convolutions run in the params' dtype, the gates and the state in the state's (float32 under
  bfloat16 params), as :func:`jaxlstm.lstm_step` does.

  Args:
    params: :class:`ConvLSTMParams`.
    state: :class:`ConvLSTMState` with ``h``, ``c`` ``(..., *spatial', F)``.
    x: input ``(..., *spatial, C)``, the same leading axes.

  Returns:
    ``(new_state, h')`` with ``h' (..., *spatial', F)``.

  References:
    Shi et al. (2015), Convolutional LSTM network: a machine learning approach for precipitation
    nowcasting, Section 3.1 (without the peephole terms, as Keras).

  Example:
    >>> params = jaxlstm.convlstm1d_init(jax.random.key(0), 2, 3)
    >>> state = jaxlstm.convlstm_zero_state(params, (4, 7))
    >>> state, h = jaxlstm.convlstm_step(params, state, jnp.ones((4, 7, 2)))
    >>> h.shape, bool((h == state.h).all())
    ((4, 7, 3), True)
  """
  r = params.rank
  lead = x.shape[: x.ndim - r - 1]
  n = math.prod(lead)
  cdt = params.dtype
  h_prev = state.h.reshape(n, *state.h.shape[state.h.ndim - r - 1 :])
  c_prev = state.c.reshape(n, *state.c.shape[state.c.ndim - r - 1 :])
  zx = (
    _conv(
      x.reshape(n, *x.shape[x.ndim - r - 1 :]).astype(cdt), params.w_x, params.strides, params.padding, params.dilation
    )
    + params.b
  )
  # Keras' recurrent convolution: "same", stride 1, no dilation, so h keeps the sizes the input convolution gave.
  zh = _conv(h_prev.astype(cdt), params.w_h, (1,) * r, "same", (1,) * r)
  z = (zx + zh).astype(c_prev.dtype)
  zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
  if params.forget_offset:
    zf = zf + jnp.asarray(params.forget_offset, zf.dtype)
  c = jax.nn.sigmoid(zf) * c_prev + jax.nn.sigmoid(zi) * jnp.tanh(zg)
  h = jax.nn.sigmoid(zo) * jnp.tanh(c)
  h, c = h.reshape(*lead, *h.shape[1:]), c.reshape(*lead, *c.shape[1:])
  return ConvLSTMState(h, c), h


def convlstm_options(params: ConvLSTMParams) -> dict:
  """The init options that give ``params``' layout (``forget_bias`` is a value, not a layout).

  Example:
    >>> from jaxlstm._src.cells.convlstm import convlstm_options
    >>> convlstm_options(jaxlstm.convlstm1d_init(jax.random.key(0), 2, 3, kernel_size=5, padding="valid"))
    {'dtype': dtype('float32'), 'kernel_size': (5,), 'padding': 'valid', 'strides': (1,), 'dilation': (1,),
     'forget_offset': 0.0}
  """
  return {
    "dtype": params.dtype,
    "kernel_size": params.kernel_size,
    "padding": params.padding,
    "strides": params.strides,
    "dilation": params.dilation,
    "forget_offset": params.forget_offset,
  }


_OPTIONS = ("kernel_size", "padding", "strides", "dilation", "forget_bias", "forget_offset")

CELL_1D = Cell(
  name="convlstm1d",
  params_type=ConvLSTM1DParams,
  state_type=ConvLSTMState,
  init=convlstm1d_init,
  step=convlstm_step,
  zero_state=convlstm_zero_state,
  options_of=convlstm_options,
  gates=4,
  options=_OPTIONS,
  peers={"keras": "ConvLSTM1D", "flax": "ConvLSTMCell"},
  feature_axes=2,
)
CELL_2D = Cell(
  name="convlstm2d",
  params_type=ConvLSTM2DParams,
  state_type=ConvLSTMState,
  init=convlstm2d_init,
  step=convlstm_step,
  zero_state=convlstm_zero_state,
  options_of=convlstm_options,
  gates=4,
  options=_OPTIONS,
  peers={"keras": "ConvLSTM2D", "flax": "ConvLSTMCell"},
  feature_axes=3,
)
