"""Flax Linen modules: thin shells over jaxlstm's pure functions.

The same set as :mod:`jaxlstm.nn`: layers :class:`LSTM`, :class:`GRU`,
:class:`RNN`, :class:`Stack`, and cells :class:`LSTMCell`, :class:`GRUCell`,
:class:`RNNCell`. Settings are module attributes; the input size is taken
from the input at ``init``. Every forward runs a :mod:`jaxlstm` function.

**Variables.** Each module has a single entry, ``"weights"``, in the
``"params"`` collection, and it holds exactly the functional params: an
:class:`jaxlstm.LSTMParams` (GRU/RNN likewise), or for :class:`Stack` the
tuple of :func:`jaxlstm.stack_init`. It is initialized by the functional
init with the module's ``"params"`` rng::

  variables = module.init(key, xs)
  params = variables["params"]["weights"]   # == from_variables(variables)
  module.apply(variables, xs)               # == jaxlstm.lstm(params, xs)[1]
  module.apply(to_variables(params), xs)    # any functional params

``Module.from_params(params)`` returns a module configured for existing
params together with their variables.

**Outputs**, as in :mod:`jaxlstm.nn`: ``return_sequences=True`` by default
(the functional API's and Flax's convention; Keras' default is ``False``);
``False`` gives the last valid output, the final ``h``; ``return_state=True``
returns ``(state, output)``.

**Dropout** (:class:`Stack` only, between layers) needs ``deterministic``, as
an attribute or a call argument, and a ``"dropout"`` rng when it is
``False``: ``module.apply(variables, xs, deterministic=False,
rngs={"dropout": key})``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxlstm
from jaxlstm.cells.gru import GRUParams
from jaxlstm.cells.lstm import LSTMParams
from jaxlstm.cells.rnn import RNNParams
from jaxlstm.nn import (_check_layout, _first, _lstm_options, _options_from_params, _output, _shape_params,
                        _stack_cell_options, _stack_options_from_params)

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell", "Stack", "WEIGHTS", "from_variables",
           "to_variables"]

WEIGHTS = "weights"
"""Name of the one entry of the ``"params"`` collection that holds the functional params."""


def to_variables(params: Any) -> dict:
  """The variables dict of a module holding functional ``params``: ``{"params": {"weights": params}}``."""
  return {"params": {WEIGHTS: params}}


def from_variables(variables: Any) -> Any:
  """The functional params in a module's variables: ``variables["params"]["weights"]``."""
  return variables["params"][WEIGHTS]


def _input_size(xs) -> int:
  shape = jnp.shape(xs)
  if not shape:
    raise ValueError(f"xs must have a feature axis (I,) last; got shape {shape}")
  return shape[-1]


class _Base(nn.Module):
  """Declares the ``weights`` param from a functional init; see the module docstring."""

  def _weights(self, init, input_size: int, args: tuple, options: dict) -> Any:
    params = self.param(WEIGHTS, lambda key: init(key, input_size, *args, **options))
    if not self.is_initializing():
      _check_layout(f'variables["params"]["{WEIGHTS}"]', params, _shape_params(init, input_size, *args, **options))
    return params

  def _finish(self, state, hs, return_sequences, return_state, merge="concat"):
    return _output(state, hs, return_sequences=_first(return_sequences, self.return_sequences),
                   return_state=_first(return_state, self.return_state), merge=merge)


_LAYER_ATTRS_DOC = """
    return_sequences: return the whole output sequence ``(*batch, T, F)``
      (the default); if ``False``, only the last valid output ``(*batch, F)``.
    return_state: also return the final state, as ``(state, output)``.
    time_major: inputs are ``(T, *batch, I)`` instead of ``(*batch, T, I)``.
    unroll: ``lax.scan`` unroll factor; ``None`` lets the path choose (see :func:`jaxlstm.lstm`).

  Call:
    ``module(xs, initial_state=None, *, lengths=None, mask=None, resets=None,
    return_sequences=None, return_state=None)``: ``xs (*batch, T, I)``;
    ``lengths (*batch,)``; ``mask``/``resets (*batch, T)``, as
    :func:`jaxlstm.scan`. ``None`` settings fall back to the attributes.
    Returns ``hs (*batch, T, F)``, the last output ``(*batch, F)``, or
    ``(state, output)``."""


class LSTM(_Base):
  """One LSTM layer over a sequence; runs :func:`jaxlstm.lstm`.

  Attributes:
    hidden_size: ``H``.
    peephole, layer_norm, proj_size, forget_bias, dtype: as
      :func:`jaxlstm.lstm_init`.
    impl: ``"fused"``, ``"reference"`` or ``"cudnn"``.
    reverse: process the sequence from the end (outputs keep their order).""" + _LAYER_ATTRS_DOC + """

  Example:
    >>> layer = jaxlstm.linen.LSTM(4)
    >>> variables = layer.init(jax.random.key(0), jnp.zeros((2, 5, 3)))
    >>> layer.apply(variables, jnp.zeros((2, 5, 3))).shape
    (2, 5, 4)
  """
  hidden_size: int
  peephole: bool = False
  layer_norm: bool = False
  proj_size: int | None = None
  forget_bias: float = 1.0
  dtype: Any = jnp.float32
  impl: str = "fused"
  reverse: bool = False
  return_sequences: bool = True
  return_state: bool = False
  time_major: bool = False
  unroll: int | bool | None = None

  @classmethod
  def from_params(cls, params: LSTMParams, **attrs) -> tuple[LSTM, dict]:
    """``(module, variables)`` for functional :class:`jaxlstm.LSTMParams`; ``attrs`` are other attributes."""
    if not isinstance(params, LSTMParams):
      raise TypeError(f"params must be LSTMParams; got {type(params).__name__}")
    return cls(params.hidden_size, **_options_from_params(params), **attrs), to_variables(params)

  @nn.compact
  def __call__(self, xs, initial_state=None, *, lengths=None, mask=None, resets=None, return_sequences=None,
               return_state=None):
    options = dict(_lstm_options(self.peephole, self.layer_norm, self.proj_size, self.forget_bias), dtype=self.dtype)
    params = self._weights(jaxlstm.lstm_init, _input_size(xs), (self.hidden_size,), options)
    state, hs = jaxlstm.lstm(params, xs, initial_state, lengths=lengths, mask=mask, resets=resets,
                             reverse=self.reverse, time_major=self.time_major, unroll=self.unroll, impl=self.impl)
    return self._finish(state, hs, return_sequences, return_state)


class GRU(_Base):
  """One GRU layer over a sequence (PyTorch's semantics); runs :func:`jaxlstm.gru`.

  Attributes:
    hidden_size: ``H``.
    dtype: parameter dtype.
    reverse: process the sequence from the end.""" + _LAYER_ATTRS_DOC + """
  """
  hidden_size: int
  dtype: Any = jnp.float32
  reverse: bool = False
  return_sequences: bool = True
  return_state: bool = False
  time_major: bool = False
  unroll: int | bool = 1

  @classmethod
  def from_params(cls, params: GRUParams, **attrs) -> tuple[GRU, dict]:
    """``(module, variables)`` for functional :class:`jaxlstm.GRUParams`."""
    if not isinstance(params, GRUParams):
      raise TypeError(f"params must be GRUParams; got {type(params).__name__}")
    return cls(params.hidden_size, dtype=params.dtype, **attrs), to_variables(params)

  @nn.compact
  def __call__(self, xs, initial_state=None, *, lengths=None, mask=None, resets=None, return_sequences=None,
               return_state=None):
    params = self._weights(jaxlstm.gru_init, _input_size(xs), (self.hidden_size,), dict(dtype=self.dtype))
    state, hs = jaxlstm.gru(params, xs, initial_state, lengths=lengths, mask=mask, resets=resets,
                            reverse=self.reverse, time_major=self.time_major, unroll=self.unroll)
    return self._finish(state, hs, return_sequences, return_state)


class RNN(_Base):
  """One Elman RNN layer over a sequence; runs :func:`jaxlstm.rnn`.

  Attributes:
    hidden_size: ``H``.
    activation: ``"tanh"`` or ``"relu"``.
    dtype: parameter dtype.
    reverse: process the sequence from the end.""" + _LAYER_ATTRS_DOC + """
  """
  hidden_size: int
  activation: str = "tanh"
  dtype: Any = jnp.float32
  reverse: bool = False
  return_sequences: bool = True
  return_state: bool = False
  time_major: bool = False
  unroll: int | bool = 1

  @classmethod
  def from_params(cls, params: RNNParams, **attrs) -> tuple[RNN, dict]:
    """``(module, variables)`` for functional :class:`jaxlstm.RNNParams`; pass ``activation`` in ``attrs``."""
    if not isinstance(params, RNNParams):
      raise TypeError(f"params must be RNNParams; got {type(params).__name__}")
    return cls(params.hidden_size, dtype=params.dtype, **attrs), to_variables(params)

  @nn.compact
  def __call__(self, xs, initial_state=None, *, lengths=None, mask=None, resets=None, return_sequences=None,
               return_state=None):
    params = self._weights(jaxlstm.rnn_init, _input_size(xs), (self.hidden_size,), dict(dtype=self.dtype))
    state, hs = jaxlstm.rnn(params, xs, initial_state, activation=self.activation, lengths=lengths, mask=mask,
                            resets=resets, reverse=self.reverse, time_major=self.time_major, unroll=self.unroll)
    return self._finish(state, hs, return_sequences, return_state)


class Stack(_Base):
  """A stack of recurrent layers, optionally bidirectional; runs :func:`jaxlstm.stack`.

  ``variables["params"]["weights"]`` is the tuple of :func:`jaxlstm.stack_init`.

  Attributes:
    hidden_size: ``H`` of every layer.
    num_layers: number of layers.
    cell: ``"lstm"``, ``"gru"`` or ``"rnn"``.
    bidirectional: give each layer a forward and a backward direction.
    merge: ``"concat"``, ``"sum"``, ``"mean"`` or ``"mul"``.
    dropout: drop rate on each layer's output except the last.
    deterministic: disable dropout; may be given at call time instead (one of
      the two, as ``nn.Dropout``). Needed only when ``dropout > 0``.
    activation: ``"tanh"`` or ``"relu"``, for ``cell="rnn"``.
    peephole, layer_norm, proj_size, forget_bias: LSTM options.
    dtype: parameter dtype.
    impl: ``"fused"``, ``"reference"`` or ``"cudnn"``, for LSTM layers.""" + _LAYER_ATTRS_DOC.replace(
      "``module(xs, initial_state=None,", "``module(xs, initial_states=None,").replace(
      "resets=None,\n", "resets=None, deterministic=None,\n") + """
    ``initial_states`` has one state per layer; ``state`` is then the tuple
    of every layer's final state.

  Example:
    >>> model = jaxlstm.linen.Stack(4, num_layers=2, bidirectional=True)
    >>> xs = jnp.zeros((2, 5, 3))
    >>> variables = model.init(jax.random.key(0), xs)
    >>> model.apply(variables, xs, lengths=jnp.array([5, 3])).shape
    (2, 5, 8)
  """
  hidden_size: int
  num_layers: int = 1
  cell: str = "lstm"
  bidirectional: bool = False
  merge: str = "concat"
  dropout: float = 0.0
  deterministic: bool | None = None
  activation: str = "tanh"
  peephole: bool = False
  layer_norm: bool = False
  proj_size: int | None = None
  forget_bias: float = 1.0
  dtype: Any = jnp.float32
  impl: str = "fused"
  return_sequences: bool = True
  return_state: bool = False
  time_major: bool = False
  unroll: int | bool | None = None

  @classmethod
  def from_params(cls, params: Any, *, merge: str = "concat", **attrs) -> tuple[Stack, dict]:
    """``(module, variables)`` for the params of :func:`jaxlstm.stack_init` built with ``merge``."""
    opts = _stack_options_from_params(params)
    del opts["input_size"]
    return cls(opts.pop("hidden_size"), merge=merge, **opts, **attrs), to_variables(tuple(params))

  @nn.compact
  def __call__(self, xs, initial_states=None, *, lengths=None, mask=None, resets=None, deterministic=None,
               return_sequences=None, return_state=None):
    lstm_kw = _lstm_options(self.peephole, self.layer_norm, self.proj_size, self.forget_bias)
    options = dict(cell=self.cell, bidirectional=self.bidirectional, merge=self.merge, dtype=self.dtype,
                   **_stack_cell_options(self.cell, **lstm_kw))
    params = self._weights(jaxlstm.stack_init, _input_size(xs), (self.hidden_size, self.num_layers), options)
    key = None
    if self.dropout > 0.0 and not nn.merge_param("deterministic", self.deterministic, deterministic):
      key = self.make_rng("dropout")
    states, hs = jaxlstm.stack(params, xs, initial_states, lengths=lengths, mask=mask, resets=resets,
                               dropout=0.0 if key is None else self.dropout, key=key, merge=self.merge,
                               activation=self.activation, time_major=self.time_major, unroll=self.unroll,
                               impl=self.impl)
    out = self._finish(states[-1], hs, return_sequences, False, merge=self.merge)
    return (states, out) if _first(return_state, self.return_state) else out


class _CellBase(_Base):

  def _init_args(self) -> tuple:
    raise NotImplementedError

  @nn.nowrap
  def initial_state(self, batch_shape: tuple[int, ...] = ()) -> Any:
    """The all-zero state, leaves ``(*batch_shape, F)``; needs no params, so it works unbound."""
    init, options = self._init_args()
    # The state does not depend on the input size, so any (here 1) gives its shapes.
    return jaxlstm.zero_state(_shape_params(init, 1, self.hidden_size, **options), batch_shape)

  def _params(self, x) -> Any:
    init, options = self._init_args()
    return self._weights(init, _input_size(x), (self.hidden_size,), options)


class LSTMCell(_CellBase):
  """One LSTM step, for hand-written loops: ``cell(state, x) -> (state, h)``; runs :func:`jaxlstm.lstm_step`.

  Attributes:
    hidden_size: ``H``.
    peephole, layer_norm, proj_size, forget_bias, dtype: as :func:`jaxlstm.lstm_init`.

  Example:
    >>> cell = jaxlstm.linen.LSTMCell(4)
    >>> state = cell.initial_state((2,))
    >>> variables = cell.init(jax.random.key(0), state, jnp.zeros((2, 3)))
    >>> state, h = cell.apply(variables, state, jnp.zeros((2, 3)))
    >>> h.shape
    (2, 4)
  """
  hidden_size: int
  peephole: bool = False
  layer_norm: bool = False
  proj_size: int | None = None
  forget_bias: float = 1.0
  dtype: Any = jnp.float32

  @classmethod
  def from_params(cls, params: LSTMParams) -> tuple[LSTMCell, dict]:
    """``(module, variables)`` for functional :class:`jaxlstm.LSTMParams`."""
    _, variables = LSTM.from_params(params)
    return cls(params.hidden_size, **_options_from_params(params)), variables

  def _init_args(self):
    return jaxlstm.lstm_init, dict(_lstm_options(self.peephole, self.layer_norm, self.proj_size, self.forget_bias),
                                   dtype=self.dtype)

  @nn.compact
  def __call__(self, state: jaxlstm.LSTMState, x: jax.Array) -> tuple[jaxlstm.LSTMState, jax.Array]:
    """``(state, x (..., I)) -> (state, h (..., P))``."""
    return jaxlstm.lstm_step(self._params(x), state, x)


class GRUCell(_CellBase):
  """One GRU step: ``cell(state, x) -> (state, h)``; runs :func:`jaxlstm.gru_step`.

  Attributes:
    hidden_size: ``H``.
    dtype: parameter dtype.
  """
  hidden_size: int
  dtype: Any = jnp.float32

  @classmethod
  def from_params(cls, params: GRUParams) -> tuple[GRUCell, dict]:
    """``(module, variables)`` for functional :class:`jaxlstm.GRUParams`."""
    _, variables = GRU.from_params(params)
    return cls(params.hidden_size, dtype=params.dtype), variables

  def _init_args(self):
    return jaxlstm.gru_init, dict(dtype=self.dtype)

  @nn.compact
  def __call__(self, state: jaxlstm.GRUState, x: jax.Array) -> tuple[jaxlstm.GRUState, jax.Array]:
    """``(state, x (..., I)) -> (state, h (..., H))``."""
    return jaxlstm.gru_step(self._params(x), state, x)


class RNNCell(_CellBase):
  """One Elman RNN step: ``cell(state, x) -> (state, h)``; runs :func:`jaxlstm.rnn_step`.

  Attributes:
    hidden_size: ``H``.
    activation: ``"tanh"`` or ``"relu"``.
    dtype: parameter dtype.
  """
  hidden_size: int
  activation: str = "tanh"
  dtype: Any = jnp.float32

  @classmethod
  def from_params(cls, params: RNNParams, *, activation: str = "tanh") -> tuple[RNNCell, dict]:
    """``(module, variables)`` for functional :class:`jaxlstm.RNNParams`."""
    _, variables = RNN.from_params(params)
    return cls(params.hidden_size, activation=activation, dtype=params.dtype), variables

  def _init_args(self):
    return jaxlstm.rnn_init, dict(dtype=self.dtype)

  @nn.compact
  def __call__(self, state: jaxlstm.RNNState, x: jax.Array) -> tuple[jaxlstm.RNNState, jax.Array]:
    """``(state, x (..., I)) -> (state, h (..., H))``."""
    return jaxlstm.rnn_step(self._params(x), state, x, activation=self.activation)
