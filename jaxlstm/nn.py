"""Flax NNX modules: thin shells over jaxlstm's pure functions.

Each module declares its params and calls the functional API; it holds no
maths of its own. Layers: :class:`LSTM`, :class:`GRU`, :class:`RNN` (one layer
each) and :class:`Stack` (several layers of any cell, optionally
bidirectional, with dropout between layers). Cells for hand-written loops:
:class:`LSTMCell`, :class:`GRUCell`, :class:`RNNCell`.

**Param layout.** A module keeps its params in ``module.weights``: the very
NamedTuple that the functional init returns (:class:`jaxlstm.LSTMParams`, or
the tuple of :func:`jaxlstm.stack_init`), with every array wrapped in an
``nnx.Param``. So ``nnx.state(module)`` has paths such as ``weights/w_x`` or
``weights/0/forward/w_h``, and::

  module.params                     # the functional params, plain arrays
  jaxlstm.lstm(module.params, xs)   # == module(xs) with return_sequences=True
  LSTM.from_params(params)          # wraps existing functional params

Initialization calls the functional init with ``rngs.params()``, so
``LSTM(I, H, rngs=nnx.Rngs(0)).params == lstm_init(nnx.Rngs(0).params(), I, H)``.

**Outputs.** ``return_sequences`` defaults to ``True``, unlike Keras: that is
what the functional API, PyTorch and Flax's ``nnx.RNN`` return, and the last
output is easy to take from the state. With ``return_sequences=False`` a
layer returns its last valid output ``(*batch, F)``: the final ``h`` of the
state (of the last layer, merged across directions for a bidirectional
one), which honours ``lengths`` and ``mask``. With ``return_state=True`` a
call returns ``(state, output)``, in the functional API's order (Keras puts
the output first).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import jaxlstm
from jaxlstm.cells.gru import GRUParams
from jaxlstm.cells.lstm import LSTMParams
from jaxlstm.cells.rnn import RNNParams
from jaxlstm.stack import Bidirectional, _merge

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell", "Stack"]

_CELL_NAMES = {LSTMParams: "lstm", GRUParams: "gru", RNNParams: "rnn"}


# Helpers shared with :mod:`jaxlstm.linen`.


def _first(value, default):
  return default if value is None else value


def _output(state: Any, hs: jax.Array, *, return_sequences: bool, return_state: bool, merge: str = "concat"):
  """What a layer call returns, from the functional ``(state, hs)``.

  ``state`` is one layer's state, or a :class:`jaxlstm.Bidirectional` pair.
  The last output is the final ``h``, in the dtype of ``hs``.
  """
  if return_sequences:
    out = hs
  elif isinstance(state, Bidirectional):
    out = _merge(state.forward.h, state.backward.h, merge).astype(hs.dtype)
  else:
    out = state.h.astype(hs.dtype)
  return (state, out) if return_state else out


def _lstm_options(peephole: bool, layer_norm: bool, proj_size: int | None, forget_bias: float) -> dict:
  return dict(peephole=peephole, layer_norm=layer_norm, proj_size=proj_size, forget_bias=forget_bias)


def _stack_cell_options(cell: str, **lstm_kw) -> dict:
  """The LSTM options to pass to ``stack_init``: those that differ from the defaults.

  Passing only those lets ``gru_init``/``rnn_init`` reject an LSTM option
  given with another cell, with their own error.
  """
  defaults = _lstm_options(False, False, None, 1.0)
  if cell == "lstm":
    return lstm_kw
  return {k: v for k, v in lstm_kw.items() if v != defaults[k]}


def _options_from_params(params: Any) -> dict:
  """The init options that give ``params``'s layout: cell kind, LSTM extras, dtype."""
  first = params.forward if isinstance(params, Bidirectional) else params
  opts: dict[str, Any] = {"dtype": first.dtype}
  if isinstance(first, LSTMParams):
    opts.update(peephole=first.peephole is not None, layer_norm=first.layer_norm is not None,
                proj_size=None if first.w_proj is None else first.output_size)
  return opts


def _stack_options_from_params(params: Any) -> dict:
  """The ``stack_init`` arguments that give a stack's layout (``merge`` aside)."""
  if isinstance(params, (LSTMParams, GRUParams, RNNParams, Bidirectional)):
    raise TypeError(f"params must be a tuple of layer params from stack_init; got a single "
                    f"{type(params).__name__} (wrap it in a tuple)")
  if not isinstance(params, (tuple, list)) or not params:
    raise TypeError(f"params must be a non-empty tuple of layer params from stack_init; got {type(params).__name__}")
  first = params[0].forward if isinstance(params[0], Bidirectional) else params[0]
  if type(first) not in _CELL_NAMES:
    raise TypeError(f"params[0] must be LSTMParams, GRUParams or RNNParams; got {type(first).__name__}")
  opts = _options_from_params(first)
  opts.update(input_size=first.input_size, hidden_size=first.hidden_size, num_layers=len(params),
              cell=_CELL_NAMES[type(first)], bidirectional=isinstance(params[0], Bidirectional))
  return opts


def _check_layout(name: str, params: Any, expected: Any) -> None:
  """Checks that ``params`` has the structure, shapes and dtypes of ``expected`` (from ``eval_shape``)."""
  got = jax.tree_util.tree_structure(params)
  want = jax.tree_util.tree_structure(expected)
  if got != want:
    raise ValueError(f"{name} must have the layout {want} that the module's options describe; got {got}")
  for (path, p), e in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(expected)):
    if p.shape != e.shape or p.dtype != e.dtype:
      raise ValueError(f"{name}{jax.tree_util.keystr(path)} must have shape {e.shape} and dtype {e.dtype}; "
                       f"got {p.shape} {p.dtype}")


def _shape_params(init, *args, **kwargs) -> Any:
  """The params of ``init(key, *args, **kwargs)`` as shapes, computing nothing."""
  return jax.eval_shape(lambda key: init(key, *args, **kwargs), jax.random.key(0))


def _is_var(x) -> bool:
  return isinstance(x, nnx.Variable)


class _Weights(nnx.Module):
  """Holds functional params as a NamedTuple of ``nnx.Param``; see the module docstring."""

  def _set_weights(self, init, args: tuple, options: dict, rngs: nnx.Rngs | None, params: Any) -> None:
    if params is None:
      if rngs is None:
        raise ValueError(f"{type(self).__name__} needs rngs to initialize its params (or pass params=...)")
      params = init(rngs.params(), *args, **options)
    else:
      _check_layout("params", params, _shape_params(init, *args, **options))
    self.weights = nnx.data(jax.tree.map(nnx.Param, params))

  @property
  def params(self) -> Any:
    """The functional params (plain arrays), for :mod:`jaxlstm`'s functions."""
    return jax.tree.map(lambda v: v.get_value(), self.weights, is_leaf=_is_var)


class _Layer(_Weights):
  """Shared call of the one-layer modules."""

  def _run(self, fn, xs, initial_state, lengths, mask, resets, return_sequences, return_state, reverse,
           time_major, **kw):
    state, hs = fn(self.params, xs, initial_state, lengths=lengths, mask=mask, resets=resets,
                   reverse=_first(reverse, self.reverse), time_major=_first(time_major, self.time_major),
                   unroll=self.unroll, **kw)
    return _output(state, hs, return_sequences=_first(return_sequences, self.return_sequences),
                  return_state=_first(return_state, self.return_state))


_LAYER_ARGS_DOC = """
    return_sequences: return the whole output sequence ``(*batch, T, F)``
      (the default); if ``False``, only the last valid output ``(*batch, F)``.
    return_state: also return the final state, as ``(state, output)``.
    reverse: process the sequence from the end (outputs keep their order).
    time_major: inputs are ``(T, *batch, I)`` instead of ``(*batch, T, I)``.
    unroll: ``lax.scan`` unroll factor; ``None`` lets the path choose (see :func:`jaxlstm.lstm`).
    rngs: ``nnx.Rngs`` whose ``params`` stream initializes the params; not
      needed with ``params``.
    params: existing functional params to wrap instead of initializing them;
      their layout must match the other arguments (see ``from_params``)."""

_CALL_DOC = """
    Args:
      xs: inputs ``(*batch, T, I)``, or ``(T, *batch, I)`` if time-major, in
        the params' dtype.
      initial_state: the initial state; zeros when ``None``.
      lengths: ``(*batch,)`` lengths of right-padded rows.
      mask: ``(*batch, T)`` flags, ``False`` = skip the step.
      resets: ``(*batch, T)`` flags, ``True`` = reset the state before the step.
      return_sequences, return_state, reverse, time_major: override the
        module's setting for this call.

    Returns:
      ``hs (*batch, T, F)``, or the last output ``(*batch, F)`` if not
      ``return_sequences``; with ``return_state``, ``(state, output)``.
    """


class LSTM(_Layer):
  """One LSTM layer over a sequence; runs :func:`jaxlstm.lstm`.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    peephole, layer_norm, proj_size, forget_bias, dtype: as
      :func:`jaxlstm.lstm_init`.
    impl: ``"fused"``, ``"reference"`` or ``"cudnn"``, as :func:`jaxlstm.lstm`.""" + _LAYER_ARGS_DOC + """

  Example:
    >>> layer = jaxlstm.nn.LSTM(3, 4, rngs=nnx.Rngs(0))
    >>> layer(jnp.zeros((2, 5, 3))).shape
    (2, 5, 4)
  """

  def __init__(self, input_size: int, hidden_size: int, *, peephole: bool = False, layer_norm: bool = False,
               proj_size: int | None = None, forget_bias: float = 1.0, dtype=jnp.float32,
               return_sequences: bool = True, return_state: bool = False, reverse: bool = False,
               time_major: bool = False, unroll: int | bool | None = None, impl: str = "fused",
               rngs: nnx.Rngs | None = None, params: LSTMParams | None = None):
    self._set_weights(jaxlstm.lstm_init, (input_size, hidden_size),
                      dict(_lstm_options(peephole, layer_norm, proj_size, forget_bias), dtype=dtype), rngs, params)
    self.return_sequences, self.return_state = return_sequences, return_state
    self.reverse, self.time_major, self.unroll, self.impl = reverse, time_major, unroll, impl

  @classmethod
  def from_params(cls, params: LSTMParams, **kwargs) -> LSTM:
    """Wraps functional :class:`jaxlstm.LSTMParams`; ``kwargs`` are the call settings (``return_sequences``...)."""
    if not isinstance(params, LSTMParams):
      raise TypeError(f"params must be LSTMParams; got {type(params).__name__}")
    return cls(params.input_size, params.hidden_size, **_options_from_params(params), params=params, **kwargs)

  def __call__(self, xs, initial_state=None, *, lengths=None, mask=None, resets=None, return_sequences=None,
               return_state=None, reverse=None, time_major=None):
    return self._run(jaxlstm.lstm, xs, initial_state, lengths, mask, resets, return_sequences, return_state,
                     reverse, time_major, impl=self.impl)

  __call__.__doc__ = "Runs the layer." + _CALL_DOC


class GRU(_Layer):
  """One GRU layer over a sequence (PyTorch's semantics); runs :func:`jaxlstm.gru`.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    dtype: parameter dtype.""" + _LAYER_ARGS_DOC + """
  """

  def __init__(self, input_size: int, hidden_size: int, *, dtype=jnp.float32, return_sequences: bool = True,
               return_state: bool = False, reverse: bool = False, time_major: bool = False,
               unroll: int | bool = 1, rngs: nnx.Rngs | None = None, params: GRUParams | None = None):
    self._set_weights(jaxlstm.gru_init, (input_size, hidden_size), dict(dtype=dtype), rngs, params)
    self.return_sequences, self.return_state = return_sequences, return_state
    self.reverse, self.time_major, self.unroll = reverse, time_major, unroll

  @classmethod
  def from_params(cls, params: GRUParams, **kwargs) -> GRU:
    """Wraps functional :class:`jaxlstm.GRUParams`; ``kwargs`` are the call settings."""
    if not isinstance(params, GRUParams):
      raise TypeError(f"params must be GRUParams; got {type(params).__name__}")
    return cls(params.input_size, params.hidden_size, dtype=params.dtype, params=params, **kwargs)

  def __call__(self, xs, initial_state=None, *, lengths=None, mask=None, resets=None, return_sequences=None,
               return_state=None, reverse=None, time_major=None):
    return self._run(jaxlstm.gru, xs, initial_state, lengths, mask, resets, return_sequences, return_state,
                     reverse, time_major)

  __call__.__doc__ = "Runs the layer." + _CALL_DOC


class RNN(_Layer):
  """One Elman RNN layer over a sequence; runs :func:`jaxlstm.rnn`.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    activation: ``"tanh"`` or ``"relu"``.
    dtype: parameter dtype.""" + _LAYER_ARGS_DOC + """
  """

  def __init__(self, input_size: int, hidden_size: int, *, activation: str = "tanh", dtype=jnp.float32,
               return_sequences: bool = True, return_state: bool = False, reverse: bool = False,
               time_major: bool = False, unroll: int | bool = 1, rngs: nnx.Rngs | None = None,
               params: RNNParams | None = None):
    self._set_weights(jaxlstm.rnn_init, (input_size, hidden_size), dict(dtype=dtype), rngs, params)
    self.activation = activation
    self.return_sequences, self.return_state = return_sequences, return_state
    self.reverse, self.time_major, self.unroll = reverse, time_major, unroll

  @classmethod
  def from_params(cls, params: RNNParams, **kwargs) -> RNN:
    """Wraps functional :class:`jaxlstm.RNNParams`; ``kwargs`` are ``activation`` and the call settings."""
    if not isinstance(params, RNNParams):
      raise TypeError(f"params must be RNNParams; got {type(params).__name__}")
    return cls(params.input_size, params.hidden_size, dtype=params.dtype, params=params, **kwargs)

  def __call__(self, xs, initial_state=None, *, lengths=None, mask=None, resets=None, return_sequences=None,
               return_state=None, reverse=None, time_major=None):
    return self._run(jaxlstm.rnn, xs, initial_state, lengths, mask, resets, return_sequences, return_state,
                     reverse, time_major, activation=self.activation)

  __call__.__doc__ = "Runs the layer." + _CALL_DOC


class Stack(_Weights):
  """A stack of recurrent layers, optionally bidirectional; runs :func:`jaxlstm.stack`.

  ``module.params`` is the tuple of :func:`jaxlstm.stack_init`: per layer, the
  cell's params or a :class:`jaxlstm.Bidirectional` pair of them.

  Args:
    input_size: ``I`` of the first layer.
    hidden_size: ``H`` of every layer.
    num_layers: number of layers.
    cell: ``"lstm"``, ``"gru"`` or ``"rnn"``.
    bidirectional: give each layer a forward and a backward direction.
    merge: how the two directions join: ``"concat"``, ``"sum"``, ``"mean"``
      or ``"mul"``.
    dropout: drop rate on each layer's output except the last, as PyTorch's.
    deterministic: disable dropout (``model.eval()``/``nnx.view`` set it);
      the call's ``deterministic`` argument takes precedence.
    activation: ``"tanh"`` or ``"relu"``, for ``cell="rnn"``.
    peephole, layer_norm, proj_size, forget_bias: LSTM options, as
      :func:`jaxlstm.lstm_init`.
    dtype: parameter dtype.
    impl: ``"fused"``, ``"reference"`` or ``"cudnn"``, for LSTM layers.""" + _LAYER_ARGS_DOC.replace(
      "    reverse: process the sequence from the end (outputs keep their order).\n", "").replace(
      "initializes the params;", "initializes the params and whose\n      ``dropout`` stream (or default) draws the dropout masks;") + """

  Example:
    >>> model = jaxlstm.nn.Stack(3, 4, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 5, 3)), lengths=jnp.array([5, 3])).shape
    (2, 5, 8)
  """

  def __init__(self, input_size: int, hidden_size: int, *, num_layers: int = 1, cell: str = "lstm",
               bidirectional: bool = False, merge: str = "concat", dropout: float = 0.0,
               deterministic: bool = False, activation: str = "tanh", peephole: bool = False,
               layer_norm: bool = False, proj_size: int | None = None, forget_bias: float = 1.0, dtype=jnp.float32,
               return_sequences: bool = True, return_state: bool = False, time_major: bool = False,
               unroll: int | bool | None = None, impl: str = "fused", rngs: nnx.Rngs | None = None,
               params: Any = None):
    options = dict(cell=cell, bidirectional=bidirectional, merge=merge, dtype=dtype,
                   **_stack_cell_options(cell, **_lstm_options(peephole, layer_norm, proj_size, forget_bias)))
    self._set_weights(jaxlstm.stack_init, (input_size, hidden_size, num_layers), options, rngs,
                      None if params is None else tuple(params))
    self.merge, self.dropout, self.deterministic, self.activation = merge, dropout, deterministic, activation
    self.return_sequences, self.return_state = return_sequences, return_state
    self.time_major, self.unroll, self.impl = time_major, unroll, impl
    self.rngs = nnx.data(None if rngs is None else rngs["dropout"].fork())

  @classmethod
  def from_params(cls, params: Any, *, merge: str = "concat", rngs: nnx.Rngs | None = None, **kwargs) -> Stack:
    """Wraps the functional params of :func:`jaxlstm.stack_init`.

    Args:
      params: the tuple of layer params.
      merge: the merge the params were built for (it fixes layer sizes).
      rngs: for dropout, if any.
      **kwargs: ``dropout``, ``activation`` and the call settings.
    """
    opts = _stack_options_from_params(params)
    return cls(opts.pop("input_size"), opts.pop("hidden_size"), merge=merge, rngs=rngs, params=params,
               **opts, **kwargs)

  def set_view(self, deterministic: bool | None = None):
    """Used by ``nnx.view``, ``model.eval()`` and ``model.train()``.

    Args:
      deterministic: if True, disables dropout.
    """
    if deterministic is not None:
      self.deterministic = deterministic

  def __call__(self, xs, initial_states=None, *, lengths=None, mask=None, resets=None, deterministic=None,
               rngs: nnx.Rngs | None = None, return_sequences=None, return_state=None, time_major=None):
    """Runs the stack.

    Args:
      xs: inputs ``(*batch, T, I)``, or ``(T, *batch, I)`` if time-major.
      initial_states: one state per layer (a :class:`jaxlstm.Bidirectional`
        pair for a bidirectional layer); zeros when ``None``.
      lengths, mask, resets: as :func:`jaxlstm.stack`, applied to every layer.
      deterministic: disable dropout for this call.
      rngs: ``nnx.Rngs`` for this call's dropout masks, instead of the
        module's own stream.
      return_sequences, return_state, time_major: override the module's setting.

    Returns:
      The last layer's ``hs (*batch, T, F)``, or its last output
      ``(*batch, F)`` if not ``return_sequences``; with ``return_state``,
      ``(states, output)`` where ``states`` has one state per layer.
    """
    deterministic = _first(deterministic, self.deterministic)
    key = None
    if self.dropout > 0.0 and not deterministic:
      stream = self.rngs if rngs is None else rngs["dropout"]
      if stream is None:
        raise ValueError("Stack with dropout > 0 needs rngs (at construction or in the call) unless "
                         "deterministic=True")
      key = stream()
    states, hs = jaxlstm.stack(self.params, xs, initial_states, lengths=lengths, mask=mask, resets=resets,
                               dropout=0.0 if key is None else self.dropout, key=key, merge=self.merge,
                               activation=self.activation, time_major=_first(time_major, self.time_major),
                               unroll=self.unroll, impl=self.impl)
    out = _output(states[-1], hs, return_sequences=_first(return_sequences, self.return_sequences),
                 return_state=False, merge=self.merge)
    return (states, out) if _first(return_state, self.return_state) else out


class _Cell(_Weights):
  """Shared part of the cell modules: ``initial_state``."""

  def initial_state(self, batch_shape: tuple[int, ...] = ()) -> Any:
    """The all-zero state, with leaves ``(*batch_shape, F)``; see :func:`jaxlstm.zero_state`."""
    return jaxlstm.zero_state(self.params, batch_shape)


class LSTMCell(_Cell):
  """One LSTM step, for hand-written loops: ``cell(state, x) -> (state, h)``; runs :func:`jaxlstm.lstm_step`.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    peephole, layer_norm, proj_size, forget_bias, dtype: as :func:`jaxlstm.lstm_init`.
    rngs: ``nnx.Rngs`` for the init; not needed with ``params``.
    params: existing :class:`jaxlstm.LSTMParams` to wrap.

  Example:
    >>> cell = jaxlstm.nn.LSTMCell(3, 4, rngs=nnx.Rngs(0))
    >>> state = cell.initial_state((2,))
    >>> state, h = cell(state, jnp.zeros((2, 3)))
    >>> h.shape
    (2, 4)
  """

  def __init__(self, input_size: int, hidden_size: int, *, peephole: bool = False, layer_norm: bool = False,
               proj_size: int | None = None, forget_bias: float = 1.0, dtype=jnp.float32,
               rngs: nnx.Rngs | None = None, params: LSTMParams | None = None):
    self._set_weights(jaxlstm.lstm_init, (input_size, hidden_size),
                      dict(_lstm_options(peephole, layer_norm, proj_size, forget_bias), dtype=dtype), rngs, params)

  @classmethod
  def from_params(cls, params: LSTMParams) -> LSTMCell:
    """Wraps functional :class:`jaxlstm.LSTMParams`."""
    if not isinstance(params, LSTMParams):
      raise TypeError(f"params must be LSTMParams; got {type(params).__name__}")
    return cls(params.input_size, params.hidden_size, **_options_from_params(params), params=params)

  def __call__(self, state: jaxlstm.LSTMState, x: jax.Array) -> tuple[jaxlstm.LSTMState, jax.Array]:
    """``(state, x (..., I)) -> (state, h (..., P))``."""
    return jaxlstm.lstm_step(self.params, state, x)


class GRUCell(_Cell):
  """One GRU step: ``cell(state, x) -> (state, h)``; runs :func:`jaxlstm.gru_step`.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    dtype: parameter dtype.
    rngs: ``nnx.Rngs`` for the init; not needed with ``params``.
    params: existing :class:`jaxlstm.GRUParams` to wrap.
  """

  def __init__(self, input_size: int, hidden_size: int, *, dtype=jnp.float32, rngs: nnx.Rngs | None = None,
               params: GRUParams | None = None):
    self._set_weights(jaxlstm.gru_init, (input_size, hidden_size), dict(dtype=dtype), rngs, params)

  @classmethod
  def from_params(cls, params: GRUParams) -> GRUCell:
    """Wraps functional :class:`jaxlstm.GRUParams`."""
    if not isinstance(params, GRUParams):
      raise TypeError(f"params must be GRUParams; got {type(params).__name__}")
    return cls(params.input_size, params.hidden_size, dtype=params.dtype, params=params)

  def __call__(self, state: jaxlstm.GRUState, x: jax.Array) -> tuple[jaxlstm.GRUState, jax.Array]:
    """``(state, x (..., I)) -> (state, h (..., H))``."""
    return jaxlstm.gru_step(self.params, state, x)


class RNNCell(_Cell):
  """One Elman RNN step: ``cell(state, x) -> (state, h)``; runs :func:`jaxlstm.rnn_step`.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    activation: ``"tanh"`` or ``"relu"``.
    dtype: parameter dtype.
    rngs: ``nnx.Rngs`` for the init; not needed with ``params``.
    params: existing :class:`jaxlstm.RNNParams` to wrap.
  """

  def __init__(self, input_size: int, hidden_size: int, *, activation: str = "tanh", dtype=jnp.float32,
               rngs: nnx.Rngs | None = None, params: RNNParams | None = None):
    self._set_weights(jaxlstm.rnn_init, (input_size, hidden_size), dict(dtype=dtype), rngs, params)
    self.activation = activation

  @classmethod
  def from_params(cls, params: RNNParams, *, activation: str = "tanh") -> RNNCell:
    """Wraps functional :class:`jaxlstm.RNNParams`."""
    if not isinstance(params, RNNParams):
      raise TypeError(f"params must be RNNParams; got {type(params).__name__}")
    return cls(params.input_size, params.hidden_size, activation=activation, dtype=params.dtype, params=params)

  def __call__(self, state: jaxlstm.RNNState, x: jax.Array) -> tuple[jaxlstm.RNNState, jax.Array]:
    """``(state, x (..., I)) -> (state, h (..., H))``."""
    return jaxlstm.rnn_step(self.params, state, x, activation=self.activation)
