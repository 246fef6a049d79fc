"""Flax NNX modules: thin shells over jaxlstm's pure functions, for any registered cell.

Three generic modules, in the way Flax's ``nnx.RNN(cell)`` is one layer over
any cell:

* :class:`Layer`, one recurrent layer over a sequence (:func:`jaxlstm.layer`);
* :class:`Stack`, several layers, optionally bidirectional, with dropout
  between them (:func:`jaxlstm.stack`);
* :class:`Cell`, one step, for hand-written loops: ``cell(state, x) -> (state, y)``.

Each takes ``cell="lstm"`` (or ``"gru"``, ``"rnn"``, or a cell added with
:func:`jaxlstm.register_cell`) and that cell's init options as keywords, and
asks the cell registry for everything else. :class:`LSTM`, :class:`GRU`,
:class:`RNN`, :class:`MinGRU`, :class:`MinLSTM`, :class:`SLSTM` and their ``...Cell``
counterparts (:class:`LSTMCell`, ...) are the same modules with the cell
fixed and its options spelled out.

**Param layout.** A module keeps its params in ``module.weights``: the very
NamedTuple that the functional init returns (:class:`jaxlstm.LSTMParams`, or
the tuple of :func:`jaxlstm.stack_init`), with every array wrapped in an
``nnx.Param``. So ``nnx.state(module)`` has paths such as ``weights/w_x`` or
``weights/0/forward/w_h``, and::

  module.params                     # the functional params, plain arrays
  jaxlstm.layer(module.params, xs)  # == module(xs, return_state=True)
  LSTM.from_params(params)          # wraps existing functional params

Initialization calls the functional init with ``rngs.params()``, so
``LSTM(I, H, rngs=nnx.Rngs(0)).params == lstm_init(nnx.Rngs(0).params(), I, H)``.
Cell options that are not arrays, such as an RNN's ``activation``, are
static fields of the params, so they live in ``module.weights`` too: a module
built from relu params computes relu, and nothing is passed at call time.

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

from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxlstm._src.extras import missing

try:  # without the package, name the extra that installs it
  from flax import nnx
except ImportError as e:
  raise missing("flax", extra="flax", needed_by="jaxlstm.nnx") from e

import jaxlstm
from jaxlstm._src.cells.registry import cell_of, get_cell, is_cell_params
from jaxlstm._src.flax_common import (
  check_cell_options,
  check_kind,
  check_layout,
  layer_output,
  needs_rng,
  params_options,
  pick,
  regularizer_rates,
  restated,
  shape_params,
  stack_options,
)
from jaxlstm._src.initial_state import given_or_initial
from jaxlstm._src.stack import Bidirectional

__all__ = [
  "Cell",
  "GRU",
  "GRUCell",
  "LSTM",
  "LSTMCell",
  "Layer",
  "MinGRU",
  "MinGRUCell",
  "MinLSTM",
  "MinLSTMCell",
  "RNN",
  "RNNCell",
  "SLSTM",
  "SLSTMCell",
  "Stack",
]


def _is_var(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


class _Weights(nnx.Module):
  """Holds functional params as their own NamedTuple of ``nnx.Param``; see the module docstring."""

  def _set_weights(self, init, args: tuple, options: dict, rngs: nnx.Rngs | None, params: Any) -> None:
    if params is None:
      if rngs is None:
        raise ValueError(f"{type(self).__name__} needs rngs to initialize its params (or pass params=...)")
      params = init(rngs.params(), *args, **options)
    else:
      check_layout("params", params, shape_params(init, *args, **options))
    self.weights = nnx.data(jax.tree.map(nnx.Param, params))

  def _set_initial_state(self, learn: bool) -> None:
    # Declared after the weights, which fix its structure; None (no param) keeps the zero initial state.
    self.learn_initial_state = learn
    self.h0 = nnx.data(jax.tree.map(nnx.Param, jaxlstm.initial_state_init(self.params)) if learn else None)

  @property
  def initial_state_params(self) -> Any:
    """The learned initial state as plain arrays (:func:`jaxlstm.initial_state_init`'s layout), or ``None``.

    Example:
      >>> layer = jaxlstm.nnx.GRU(3, 4, learn_initial_state=True, rngs=nnx.Rngs(0))
      >>> layer.initial_state_params.h.shape
      (4,)
    """
    if self.h0 is None:
      return None
    return jax.tree.map(lambda v: v.get_value(), self.h0, is_leaf=_is_var)

  @property
  def params(self) -> Any:
    """The functional params (plain arrays), for :mod:`jaxlstm`'s functions.

    Returns:
      The module's params in the functional layout: one layer's params (say
      :class:`jaxlstm.LSTMParams`), or a stack's tuple.

    Example:
      >>> layer = jaxlstm.nnx.GRU(3, 4, rngs=nnx.Rngs(0))
      >>> type(layer.params).__name__, layer.params.w_x.shape
      ('GRUParams', (3, 12))
    """
    return jax.tree.map(lambda v: v.get_value(), self.weights, is_leaf=_is_var)

  def _first_layer(self) -> Any:
    """The first layer's params, as ``nnx.Param`` leaves: all of them for one cell, ``[0]`` of a stack."""
    first = self.weights if is_cell_params(self.weights) else self.weights[0]
    return first.forward if isinstance(first, Bidirectional) else first

  @property
  def cell(self) -> str:
    """The name of the module's cell in the registry, e.g. ``"lstm"``.

    Returns:
      The registered name of the cell whose params the module holds (of
      every layer, for a :class:`Stack`).

    Example:
      >>> jaxlstm.nnx.Layer(3, 4, cell="gru", rngs=nnx.Rngs(0)).cell
      'gru'
    """
    return cell_of(self._first_layer()).name  # ``weights`` keeps the params' own NamedTuple types

  @property
  def options(self) -> dict:
    """The cell's init options that the params hold, ``dtype`` included.

    Returns:
      A dict such as ``{"dtype": float32, "activation": "relu"}``: the options
      that rebuild the params' layout (of every layer, for a :class:`Stack`).

    Example:
      >>> jaxlstm.nnx.RNN(3, 4, activation="relu", rngs=nnx.Rngs(0)).options["activation"]
      'relu'
      >>> jaxlstm.nnx.Stack(3, 4, cell="rnn", activation="relu", rngs=nnx.Rngs(0)).options["activation"]
      'relu'
    """
    first = self._first_layer()
    return params_options(jax.tree.map(lambda v: v.get_value(), first, is_leaf=_is_var))


class _Masked(nnx.Module):
  """What :class:`Layer` and :class:`Stack` share: the regularizer rates, ``deterministic`` and the mask stream."""

  def _set_masks(
    self,
    rngs: nnx.Rngs | None,
    deterministic: bool,
    *,
    dropout: float = 0.0,
    input_dropout: float,
    recurrent_dropout: float,
    zoneout: Any,
    weight_drop: float,
  ) -> None:
    self.dropout, self.deterministic = dropout, deterministic
    self.input_dropout, self.recurrent_dropout, self.weight_drop = input_dropout, recurrent_dropout, weight_drop
    self.zoneout = dict(zoneout) if isinstance(zoneout, Mapping) else zoneout
    self.rngs = nnx.data(None if rngs is None else rngs["dropout"].fork())

  def set_view(self, deterministic: bool | None = None) -> None:
    """Switches dropout and the regularizers' masks; used by ``nnx.view``, ``model.eval()`` and ``model.train()``.

    Args:
      deterministic: if ``True``, disables dropout and the masks (zoneout takes its expectation); ``None``
        leaves it.

    Returns:
      Nothing; the module changes in place.

    Example:
      >>> model = jaxlstm.nnx.Stack(3, 4, cell="gru", dropout=0.5, rngs=nnx.Rngs(0))
      >>> model.eval()
      >>> model.deterministic
      True
    """
    if deterministic is not None:
      self.deterministic = deterministic

  def _masks(self, deterministic: bool | None, rngs: nnx.Rngs | None) -> tuple[jax.Array | None, dict]:
    """The call's key (``None`` when it draws no masks) and its :func:`jaxlstm.stack` regularizer options."""
    training = not pick(deterministic, self.deterministic)
    key = None
    if training and needs_rng(self):
      stream = self.rngs if rngs is None else rngs["dropout"]
      if stream is None:
        raise ValueError(
          f"{type(self).__name__} with dropout or regularizers needs rngs (at construction or in "
          f"the call) unless deterministic=True"
        )
      key = stream()
    return key, regularizer_rates(self, training)


class _OneCell(_Weights):
  """What :class:`Layer` and :class:`Cell` share: one cell's params, built from its name and options."""

  CELL: ClassVar[str | None] = None  # set by the named variants (LSTM, GRUCell, ...)

  def _set_cell(
    self, input_size: int, hidden_size: int, cell: str, dtype: Any, options: dict, rngs: nnx.Rngs | None, params: Any
  ) -> None:
    record = get_cell(cell)
    options = dict(check_cell_options(record, options), dtype=dtype)
    self._set_weights(record.init, (input_size, hidden_size), options, rngs, params)

  @classmethod
  def _from_params(cls, params: Any, settings: dict):
    record = check_kind(params, cls.CELL)
    options = params_options(params)
    settings = restated({**options, "cell": record.name}, settings)
    if cls.CELL is None:
      options["cell"] = record.name
    # cls is a subclass (Layer, Cell or a named variant), whose __init__ takes these; this base declares none.
    return cls(params.input_size, params.hidden_size, **options, params=params, **settings)  # type: ignore[call-arg]


class Layer(_OneCell, _Masked):
  """One recurrent layer of any registered cell over a sequence; runs :func:`jaxlstm.layer`.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    cell: the name of a registered cell: ``"lstm"``, ``"gru"``, ``"rnn"`` or
      one added with :func:`jaxlstm.register_cell`.
    dtype: parameter dtype.
    return_sequences: return the whole output sequence ``(*batch, T, F)``
      (the default); if ``False``, only the last valid output ``(*batch, F)``.
    return_state: also return the final state, as ``(state, output)``.
    reverse: process the sequence from the end (outputs keep their order).
    time_major: inputs are ``(T, *batch, I)`` instead of ``(*batch, T, I)``.
    unroll: ``lax.scan`` unroll factor; ``None`` lets the kernel choose.
    impl: ``"auto"`` (the fastest kernel that can run the call) or a
      kernel's name, as :func:`jaxlstm.layer`.
    remat: checkpoint every ``remat`` steps, as :func:`jaxlstm.layer`.
    learn_initial_state: a trainable initial state, ``module.h0`` (zeros at
      first, :func:`jaxlstm.initial_state_init`), used when a call gives no
      ``initial_state``; ``resets`` go back to it too.
    input_dropout, recurrent_dropout, zoneout, weight_drop: the recurrent
      regularizers (:mod:`jaxlstm.regularizers`): Keras' ``dropout`` and
      ``recurrent_dropout``, zoneout (a rate, or ``{state field: rate}``) and
      DropConnect on ``w_h``.
    deterministic: disable the regularizers' masks, zoneout taking its
      expectation (``model.eval()`` sets it); the call's ``deterministic``
      takes precedence.
    rngs: ``nnx.Rngs`` whose ``params`` stream initializes the params and
      whose ``dropout`` stream (or default) draws the regularizers' masks; not
      needed with ``params`` and no regularizer.
    params: existing functional params to wrap instead of initializing them;
      their layout must match the other arguments (see :meth:`from_params`).
    **cell_options: the cell's init options, such as ``peephole`` or
      ``proj_size`` for ``"lstm"`` and ``activation`` for ``"rnn"``; they are
      stored in the params.

  Raises:
    TypeError: an option the cell does not take.
    ValueError: ``params`` whose layout the arguments do not describe, or no
      ``rngs`` and no ``params``.

  Example:
    >>> layer = jaxlstm.nnx.Layer(3, 4, cell="rnn", activation="relu", rngs=nnx.Rngs(0))
    >>> hs = layer(jnp.ones((2, 5, 3)))
    >>> hs.shape, bool((hs >= 0).all())
    ((2, 5, 4), True)
  """

  def __init__(
    self,
    input_size: int,
    hidden_size: int,
    *,
    cell: str = "lstm",
    dtype: Any = jnp.float32,
    return_sequences: bool = True,
    return_state: bool = False,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int | bool | None = None,
    impl: str = "auto",
    remat: int | None = None,
    learn_initial_state: bool = False,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    zoneout: float | dict = 0.0,
    weight_drop: float = 0.0,
    deterministic: bool = False,
    rngs: nnx.Rngs | None = None,
    params: Any = None,
    **cell_options,
  ):
    self._set_cell(input_size, hidden_size, cell, dtype, cell_options, rngs, params)
    self._set_initial_state(learn_initial_state)
    self._set_masks(
      rngs,
      deterministic,
      input_dropout=input_dropout,
      recurrent_dropout=recurrent_dropout,
      zoneout=zoneout,
      weight_drop=weight_drop,
    )
    self.return_sequences, self.return_state = return_sequences, return_state
    self.reverse, self.time_major = reverse, time_major
    self.unroll, self.impl, self.remat = unroll, impl, remat

  @classmethod
  def from_params(cls, params: Any, **settings) -> Layer:
    """Wraps existing functional params of one layer.

    The cell and its options (``dtype``, ``activation``, ``peephole``...) come
    from the params, so nothing about the cell needs repeating.

    Args:
      params: one layer's params of a registered cell (of the class's own
        cell for a named variant such as :class:`LSTM`).
      **settings: the call settings (``return_sequences``, ``reverse``,
        ``impl``...). A cell option may be restated, but not changed.

    Returns:
      A module whose ``params`` are ``params``.

    Raises:
      TypeError: ``params`` are not a registered cell's (or not the named
        variant's cell's).
      ValueError: a setting that contradicts the params.

    Example:
      >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 4, activation="relu")
      >>> layer = jaxlstm.nnx.RNN.from_params(params)
      >>> layer.params.activation, layer.cell
      ('relu', 'rnn')
    """
    return cls._from_params(params, settings)

  def __call__(
    self,
    xs: jax.Array,
    initial_state: Any = None,
    *,
    lengths: jax.Array | None = None,
    mask: jax.Array | None = None,
    resets: jax.Array | None = None,
    return_sequences: bool | None = None,
    return_state: bool | None = None,
    reverse: bool | None = None,
    time_major: bool | None = None,
    deterministic: bool | None = None,
    rngs: nnx.Rngs | None = None,
  ):
    """Runs the layer over a sequence.

    Args:
      xs: inputs ``(*batch, T, I)``, or ``(T, *batch, I)`` if time-major, in
        the params' dtype.
      initial_state: the initial state; when ``None``, the learned one
        (``learn_initial_state``) broadcast to the batch, else zeros.
      lengths: ``(*batch,)`` lengths of right-padded rows.
      mask: ``(*batch, T)`` flags, ``False`` = skip the step.
      resets: ``(*batch, T)`` flags, ``True`` = reset the state before the step.
      return_sequences: override the module's setting for this call.
      return_state: override the module's setting for this call.
      reverse: override the module's setting for this call.
      time_major: override the module's setting for this call.
      deterministic: disable the regularizers' masks for this call.
      rngs: ``nnx.Rngs`` for this call's masks, instead of the module's own stream.

    Returns:
      ``hs (*batch, T, F)``, or the last valid output ``(*batch, F)`` if not
      ``return_sequences``; with ``return_state``, ``(state, output)``.

    Example:
      >>> layer = jaxlstm.nnx.LSTM(3, 4, rngs=nnx.Rngs(0))
      >>> state, last = layer(jnp.ones((2, 5, 3)), lengths=jnp.array([5, 2]), return_sequences=False,
      ...                     return_state=True)
      >>> last.shape, bool((last == state.h).all())
      ((2, 4), True)
    """
    time_major = pick(time_major, self.time_major)
    initial_state = given_or_initial(initial_state, self.initial_state_params, xs, time_major=time_major)
    key, rates = self._masks(deterministic, rngs)
    state, hs = jaxlstm.layer(
      self.params,
      xs,
      initial_state,
      lengths=lengths,
      mask=mask,
      resets=resets,
      reverse=pick(reverse, self.reverse),
      time_major=time_major,
      unroll=self.unroll,
      impl=self.impl,
      remat=self.remat,
      key=key,
      **rates,
    )
    return layer_output(
      state,
      hs,
      return_sequences=pick(return_sequences, self.return_sequences),
      return_state=pick(return_state, self.return_state),
    )


class LSTM(Layer):
  """One LSTM layer: :class:`Layer` with ``cell="lstm"``.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    peephole: add diagonal peephole connections, as :func:`jaxlstm.lstm_init`.
    layer_norm: layer-normalize the gates and the cell, as :func:`jaxlstm.lstm_init`.
    proj_size: project ``h`` to this size, as :func:`jaxlstm.lstm_init`.
    forget_bias: the forget gate's initial bias.
    **settings: ``dtype``, the call settings, ``rngs`` and ``params``, as :class:`Layer`.

  Example:
    >>> layer = jaxlstm.nnx.LSTM(3, 4, proj_size=2, rngs=nnx.Rngs(0))
    >>> layer(jnp.zeros((2, 5, 3))).shape
    (2, 5, 2)
  """

  CELL = "lstm"

  def __init__(
    self,
    input_size: int,
    hidden_size: int,
    *,
    peephole: bool = False,
    layer_norm: bool = False,
    proj_size: int | None = None,
    forget_bias: float = 1.0,
    **settings,
  ):
    super().__init__(
      input_size,
      hidden_size,
      cell="lstm",
      peephole=peephole,
      layer_norm=layer_norm,
      proj_size=proj_size,
      forget_bias=forget_bias,
      **settings,
    )


class GRU(Layer):
  """One GRU layer (PyTorch's semantics): :class:`Layer` with ``cell="gru"``.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    **settings: ``dtype``, the call settings, ``rngs`` and ``params``, as :class:`Layer`.

  Example:
    >>> layer = jaxlstm.nnx.GRU(3, 4, rngs=nnx.Rngs(0))
    >>> layer(jnp.zeros((2, 5, 3)), return_sequences=False).shape
    (2, 4)
  """

  CELL = "gru"

  def __init__(self, input_size: int, hidden_size: int, **settings):
    super().__init__(input_size, hidden_size, cell="gru", **settings)


class RNN(Layer):
  """One Elman RNN layer: :class:`Layer` with ``cell="rnn"``.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    activation: ``"tanh"`` or ``"relu"``; stored in the params.
    **settings: ``dtype``, the call settings, ``rngs`` and ``params``, as :class:`Layer`.

  Example:
    >>> layer = jaxlstm.nnx.RNN(3, 4, activation="relu", rngs=nnx.Rngs(0))
    >>> layer.params.activation, layer(jnp.ones((2, 5, 3))).shape
    ('relu', (2, 5, 4))
  """

  CELL = "rnn"

  def __init__(self, input_size: int, hidden_size: int, *, activation: str = "tanh", **settings):
    super().__init__(input_size, hidden_size, cell="rnn", activation=activation, **settings)


class MinGRU(Layer):
  """One minGRU layer (Feng et al., 2024): :class:`Layer` with ``cell="mingru"``; trains on the parallel kernel.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    log_space: the paper's log-space version (the default), as :func:`jaxlstm.mingru_init`.
    **settings: ``dtype``, the call settings, ``rngs`` and ``params``, as :class:`Layer`.

  Example:
    >>> layer = jaxlstm.nnx.MinGRU(3, 4, rngs=nnx.Rngs(0))
    >>> layer(jnp.zeros((2, 5, 3))).shape
    (2, 5, 4)
  """

  CELL = "mingru"

  def __init__(self, input_size: int, hidden_size: int, *, log_space: bool = True, **settings):
    super().__init__(input_size, hidden_size, cell="mingru", log_space=log_space, **settings)


class MinLSTM(Layer):
  """One minLSTM layer (Feng et al., 2024): :class:`Layer` with ``cell="minlstm"``; trains on the parallel kernel.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    log_space: the paper's log-space version (the default), as :func:`jaxlstm.minlstm_init`.
    **settings: ``dtype``, the call settings, ``rngs`` and ``params``, as :class:`Layer`.

  Example:
    >>> layer = jaxlstm.nnx.MinLSTM(3, 4, log_space=False, rngs=nnx.Rngs(0))
    >>> layer.params.log_space, layer(jnp.ones((2, 5, 3)), return_sequences=False).shape
    (False, (2, 4))
  """

  CELL = "minlstm"

  def __init__(self, input_size: int, hidden_size: int, *, log_space: bool = True, **settings):
    super().__init__(input_size, hidden_size, cell="minlstm", log_space=log_space, **settings)


class SLSTM(Layer):
  """One sLSTM layer (Beck et al., 2024, xLSTM): :class:`Layer` with ``cell="slstm"``.

  Args:
    input_size: ``I``.
    hidden_size: ``H``, a multiple of ``num_heads``.
    num_heads: heads of the block-diagonal recurrence, as :func:`jaxlstm.slstm_init`.
    forget_gate: ``"sigmoid"`` (the default, as xlstm's) or ``"exp"``.
    **settings: ``dtype``, the call settings, ``rngs`` and ``params``, as :class:`Layer`.

  Example:
    >>> layer = jaxlstm.nnx.SLSTM(3, 4, num_heads=2, rngs=nnx.Rngs(0))
    >>> layer.params.num_heads, layer(jnp.ones((2, 5, 3))).shape
    (2, (2, 5, 4))
  """

  CELL = "slstm"

  def __init__(
    self, input_size: int, hidden_size: int, *, num_heads: int = 1, forget_gate: str = "sigmoid", **settings
  ):
    super().__init__(input_size, hidden_size, cell="slstm", num_heads=num_heads, forget_gate=forget_gate, **settings)


class Stack(_Weights, _Masked):
  """A stack of recurrent layers of any registered cell, optionally bidirectional; runs :func:`jaxlstm.stack`.

  ``module.params`` is the tuple of :func:`jaxlstm.stack_init`: per layer, the
  cell's params or a :class:`jaxlstm.Bidirectional` pair of them.

  Args:
    input_size: ``I`` of the first layer.
    hidden_size: ``H`` of every layer.
    num_layers: number of layers.
    cell: the name of a registered cell: ``"lstm"``, ``"gru"``, ``"rnn"`` or
      one added with :func:`jaxlstm.register_cell`.
    bidirectional: give each layer a forward and a backward direction.
    merge: how the two directions join: ``"concat"``, ``"sum"``, ``"mean"``
      or ``"mul"``.
    dropout: drop rate on each layer's output except the last, as PyTorch's.
    input_dropout, recurrent_dropout, zoneout, weight_drop: the recurrent
      regularizers of every layer (:mod:`jaxlstm.regularizers`): Keras'
      ``dropout`` and ``recurrent_dropout``, zoneout (a rate, or
      ``{state field: rate}``) and DropConnect on ``w_h``.
    deterministic: disable dropout and the regularizers' masks, zoneout
      taking its expectation (``model.eval()`` and ``nnx.view`` set it); the
      call's ``deterministic`` argument takes precedence.
    dtype: parameter dtype.
    return_sequences: return the last layer's whole output sequence (the
      default); if ``False``, only its last valid output ``(*batch, F)``.
    return_state: also return every layer's final state, as ``(states, output)``.
    time_major: inputs are ``(T, *batch, I)`` instead of ``(*batch, T, I)``.
    unroll: ``lax.scan`` unroll factor; ``None`` lets the kernel choose.
    impl: ``"auto"`` or a kernel's name, for every layer (see :func:`jaxlstm.layer`).
    remat: checkpoint every ``remat`` steps in each layer.
    learn_initial_state: a trainable initial state per layer and direction,
      ``module.h0`` (zeros at first, :func:`jaxlstm.initial_state_init`),
      used when a call gives no ``initial_states``; ``resets`` go back to it too.
    rngs: ``nnx.Rngs`` whose ``params`` stream initializes the params and
      whose ``dropout`` stream (or default) draws the dropout and
      regularizer masks; not needed with ``params`` and no dropout.
    params: existing functional params to wrap (see :meth:`from_params`).
    **cell_options: the cell's init options, for every layer, such as
      ``peephole`` for ``"lstm"`` or ``activation`` for ``"rnn"``; they are
      stored in the params.

  Raises:
    TypeError: an option the cell does not take.
    ValueError: ``params`` whose layout the arguments do not describe, or no
      ``rngs`` and no ``params``.

  Example:
    >>> model = jaxlstm.nnx.Stack(3, 4, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 5, 3)), lengths=jnp.array([5, 3])).shape
    (2, 5, 8)
    >>> relu = jaxlstm.nnx.Stack(3, 4, cell="rnn", activation="relu", rngs=nnx.Rngs(0))
    >>> relu.params[0].activation
    'relu'
  """

  def __init__(
    self,
    input_size: int,
    hidden_size: int,
    *,
    num_layers: int = 1,
    cell: str = "lstm",
    bidirectional: bool = False,
    merge: str = "concat",
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    zoneout: float | dict = 0.0,
    weight_drop: float = 0.0,
    deterministic: bool = False,
    dtype: Any = jnp.float32,
    return_sequences: bool = True,
    return_state: bool = False,
    time_major: bool = False,
    unroll: int | bool | None = None,
    impl: str = "auto",
    remat: int | None = None,
    learn_initial_state: bool = False,
    rngs: nnx.Rngs | None = None,
    params: Any = None,
    **cell_options,
  ):
    options = dict(
      check_cell_options(get_cell(cell), cell_options), cell=cell, bidirectional=bidirectional, merge=merge, dtype=dtype
    )
    self._set_weights(
      jaxlstm.stack_init,
      (input_size, hidden_size, num_layers),
      options,
      rngs,
      None if params is None else tuple(params),
    )
    self._set_initial_state(learn_initial_state)
    self.merge = merge
    self._set_masks(
      rngs,
      deterministic,
      dropout=dropout,
      input_dropout=input_dropout,
      recurrent_dropout=recurrent_dropout,
      zoneout=zoneout,
      weight_drop=weight_drop,
    )
    self.return_sequences, self.return_state = return_sequences, return_state
    self.time_major, self.unroll, self.impl, self.remat = time_major, unroll, impl, remat

  @classmethod
  def from_params(cls, params: Any, *, merge: str = "concat", rngs: nnx.Rngs | None = None, **settings) -> Stack:
    """Wraps the functional params of :func:`jaxlstm.stack_init`.

    The cell, the number of layers, the directions and the cell options come
    from the params.

    Args:
      params: the tuple of layer params.
      merge: the merge the params were built for (it fixes layer sizes).
      rngs: for dropout, if any.
      **settings: ``dropout``, ``deterministic`` and the call settings. A cell
        option may be restated, but not changed.

    Returns:
      A module whose ``params`` are ``params``.

    Raises:
      TypeError, ValueError: params that are not a stack built with
        ``merge``, or a setting that contradicts them.

    Example:
      >>> params = jaxlstm.stack_init(jax.random.key(0), 3, 4, 2, cell="rnn", activation="relu")
      >>> model = jaxlstm.nnx.Stack.from_params(params)
      >>> model.params[1].activation, model(jnp.ones((2, 5, 3))).shape
      ('relu', (2, 5, 4))
    """
    options = stack_options(params, merge)
    settings = restated(options, settings)
    return cls(
      options.pop("input_size"),
      options.pop("hidden_size"),
      merge=merge,
      rngs=rngs,
      params=params,
      **options,
      **settings,
    )

  def __call__(
    self,
    xs: jax.Array,
    initial_states: Any = None,
    *,
    lengths: jax.Array | None = None,
    mask: jax.Array | None = None,
    resets: jax.Array | None = None,
    deterministic: bool | None = None,
    rngs: nnx.Rngs | None = None,
    return_sequences: bool | None = None,
    return_state: bool | None = None,
    time_major: bool | None = None,
  ):
    """Runs the stack over a sequence.

    Args:
      xs: inputs ``(*batch, T, I)``, or ``(T, *batch, I)`` if time-major.
      initial_states: one state per layer (a :class:`jaxlstm.Bidirectional`
        pair for a bidirectional layer); when ``None``, the learned ones
        (``learn_initial_state``) broadcast to the batch, else zeros.
      lengths: ``(*batch,)`` lengths, for every layer.
      mask: ``(*batch, T)`` validity flags, for every layer.
      resets: ``(*batch, T)`` segment starts, for every layer.
      deterministic: disable dropout for this call.
      rngs: ``nnx.Rngs`` for this call's dropout masks, instead of the
        module's own stream.
      return_sequences: override the module's setting for this call.
      return_state: override the module's setting for this call.
      time_major: override the module's setting for this call.

    Returns:
      The last layer's ``hs (*batch, T, F)``, or its last valid output
      ``(*batch, F)`` if not ``return_sequences``; with ``return_state``,
      ``(states, output)`` where ``states`` has one state per layer.

    Raises:
      ValueError: dropout is on and no ``rngs`` were given here or at
        construction.

    Example:
      >>> model = jaxlstm.nnx.Stack(3, 4, num_layers=2, cell="gru", rngs=nnx.Rngs(0))
      >>> states, last = model(jnp.ones((2, 5, 3)), return_sequences=False, return_state=True)
      >>> len(states), last.shape
      (2, (2, 4))
    """
    key, rates = self._masks(deterministic, rngs)
    time_major = pick(time_major, self.time_major)
    initial_states = given_or_initial(initial_states, self.initial_state_params, xs, time_major=time_major)
    states, hs = jaxlstm.stack(
      self.params,
      xs,
      initial_states,
      lengths=lengths,
      mask=mask,
      resets=resets,
      dropout=0.0 if key is None else self.dropout,
      key=key,
      merge=self.merge,
      time_major=time_major,
      unroll=self.unroll,
      impl=self.impl,
      remat=self.remat,
      **rates,
    )
    out = layer_output(
      states[-1],
      hs,
      return_sequences=pick(return_sequences, self.return_sequences),
      return_state=False,
      merge=self.merge,
    )
    return (states, out) if pick(return_state, self.return_state) else out


class Cell(_OneCell):
  """One step of any registered cell, for hand-written loops: ``cell(state, x) -> (state, y)``.

  It runs the cell's registered ``step`` (e.g. :func:`jaxlstm.lstm_step`).

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    cell: the name of a registered cell: ``"lstm"``, ``"gru"``, ``"rnn"`` or
      one added with :func:`jaxlstm.register_cell`.
    dtype: parameter dtype.
    rngs: ``nnx.Rngs`` whose ``params`` stream initializes the params; not
      needed with ``params``.
    params: existing functional params to wrap (see :meth:`from_params`).
    **cell_options: the cell's init options, stored in the params.

  Raises:
    TypeError: an option the cell does not take.
    ValueError: ``params`` whose layout the arguments do not describe, or no
      ``rngs`` and no ``params``.

  Example:
    >>> cell = jaxlstm.nnx.Cell(3, 4, cell="gru", rngs=nnx.Rngs(0))
    >>> state = cell.initial_state((2,))
    >>> for x in jnp.ones((5, 2, 3)):
    ...   state, y = cell(state, x)
    >>> y.shape
    (2, 4)
  """

  def __init__(
    self,
    input_size: int,
    hidden_size: int,
    *,
    cell: str = "lstm",
    dtype: Any = jnp.float32,
    rngs: nnx.Rngs | None = None,
    params: Any = None,
    **cell_options,
  ):
    self._set_cell(input_size, hidden_size, cell, dtype, cell_options, rngs, params)

  @classmethod
  def from_params(cls, params: Any) -> Cell:
    """Wraps existing functional params of one layer; the cell and its options come from them.

    Args:
      params: one layer's params of a registered cell (of the class's own
        cell for a named variant such as :class:`LSTMCell`).

    Returns:
      A module whose ``params`` are ``params``.

    Raises:
      TypeError: ``params`` are not a registered cell's (or not the named
        variant's cell's).

    Example:
      >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 4, activation="relu")
      >>> cell = jaxlstm.nnx.Cell.from_params(params)
      >>> cell.cell, cell.options["activation"]
      ('rnn', 'relu')
    """
    return cls._from_params(params, {})

  def initial_state(self, batch_shape: tuple[int, ...] = ()) -> Any:
    """The all-zero state; see :func:`jaxlstm.zero_state`.

    Args:
      batch_shape: the leading batch axes of every state leaf.

    Returns:
      The cell's state (say :class:`jaxlstm.LSTMState`), leaves ``(*batch_shape, F)``.

    Example:
      >>> cell = jaxlstm.nnx.LSTMCell(3, 4, proj_size=2, rngs=nnx.Rngs(0))
      >>> state = cell.initial_state((5,))
      >>> state.h.shape, state.c.shape
      ((5, 2), (5, 4))
    """
    params = self.params
    return cell_of(params).zero_state(params, tuple(batch_shape))

  def __call__(self, state: Any, x: jax.Array) -> tuple[Any, jax.Array]:
    """One step.

    Args:
      state: the cell's state, leaves ``(..., F)``.
      x: the input ``(..., I)``.

    Returns:
      ``(new_state, y)``: the next state and the step's output ``(..., F)``.

    Raises:
      ValueError: ``x`` does not end in the params' input size.

    Example:
      >>> cell = jaxlstm.nnx.RNNCell(3, 4, activation="relu", rngs=nnx.Rngs(0))
      >>> state, y = cell(cell.initial_state((2,)), jnp.ones((2, 3)))
      >>> y.shape, bool((y >= 0).all())
      ((2, 4), True)
    """
    params = self.params
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != params.input_size:
      raise ValueError(f"x must have shape (..., {params.input_size}); got {jnp.shape(x)}")
    return cell_of(params).step(params, state, x)


class LSTMCell(Cell):
  """One LSTM step: :class:`Cell` with ``cell="lstm"``; ``cell(state, x) -> (state, h)``.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    peephole: add diagonal peephole connections, as :func:`jaxlstm.lstm_init`.
    layer_norm: layer-normalize the gates and the cell, as :func:`jaxlstm.lstm_init`.
    proj_size: project ``h`` to this size, as :func:`jaxlstm.lstm_init`.
    forget_bias: the forget gate's initial bias.
    **settings: ``dtype``, ``rngs`` and ``params``, as :class:`Cell`.

  Example:
    >>> cell = jaxlstm.nnx.LSTMCell(3, 4, rngs=nnx.Rngs(0))
    >>> state, h = cell(cell.initial_state((2,)), jnp.zeros((2, 3)))
    >>> h.shape, state.c.shape
    ((2, 4), (2, 4))
  """

  CELL = "lstm"

  def __init__(
    self,
    input_size: int,
    hidden_size: int,
    *,
    peephole: bool = False,
    layer_norm: bool = False,
    proj_size: int | None = None,
    forget_bias: float = 1.0,
    **settings,
  ):
    super().__init__(
      input_size,
      hidden_size,
      cell="lstm",
      peephole=peephole,
      layer_norm=layer_norm,
      proj_size=proj_size,
      forget_bias=forget_bias,
      **settings,
    )


class GRUCell(Cell):
  """One GRU step: :class:`Cell` with ``cell="gru"``; ``cell(state, x) -> (state, h)``.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    **settings: ``dtype``, ``rngs`` and ``params``, as :class:`Cell`.

  Example:
    >>> cell = jaxlstm.nnx.GRUCell(3, 4, rngs=nnx.Rngs(0))
    >>> cell(cell.initial_state(), jnp.zeros(3))[1].shape
    (4,)
  """

  CELL = "gru"

  def __init__(self, input_size: int, hidden_size: int, **settings):
    super().__init__(input_size, hidden_size, cell="gru", **settings)


class RNNCell(Cell):
  """One Elman RNN step: :class:`Cell` with ``cell="rnn"``; ``cell(state, x) -> (state, h)``.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    activation: ``"tanh"`` or ``"relu"``; stored in the params.
    **settings: ``dtype``, ``rngs`` and ``params``, as :class:`Cell`.

  Example:
    >>> cell = jaxlstm.nnx.RNNCell(3, 4, activation="relu", rngs=nnx.Rngs(0))
    >>> cell.params.activation
    'relu'
  """

  CELL = "rnn"

  def __init__(self, input_size: int, hidden_size: int, *, activation: str = "tanh", **settings):
    super().__init__(input_size, hidden_size, cell="rnn", activation=activation, **settings)


class MinGRUCell(Cell):
  """One minGRU step: :class:`Cell` with ``cell="mingru"``; ``cell(state, x) -> (state, h)``, for streaming.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    log_space: the paper's log-space version (the default), as :func:`jaxlstm.mingru_init`.
    **settings: ``dtype``, ``rngs`` and ``params``, as :class:`Cell`.

  Example:
    >>> cell = jaxlstm.nnx.MinGRUCell(3, 4, rngs=nnx.Rngs(0))
    >>> cell(cell.initial_state((2,)), jnp.zeros((2, 3)))[1].shape
    (2, 4)
  """

  CELL = "mingru"

  def __init__(self, input_size: int, hidden_size: int, *, log_space: bool = True, **settings):
    super().__init__(input_size, hidden_size, cell="mingru", log_space=log_space, **settings)


class MinLSTMCell(Cell):
  """One minLSTM step: :class:`Cell` with ``cell="minlstm"``; ``cell(state, x) -> (state, h)``, for streaming.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    log_space: the paper's log-space version (the default), as :func:`jaxlstm.minlstm_init`.
    **settings: ``dtype``, ``rngs`` and ``params``, as :class:`Cell`.

  Example:
    >>> cell = jaxlstm.nnx.MinLSTMCell(3, 4, rngs=nnx.Rngs(0))
    >>> cell(cell.initial_state(), jnp.zeros(3))[1].shape
    (4,)
  """

  CELL = "minlstm"

  def __init__(self, input_size: int, hidden_size: int, *, log_space: bool = True, **settings):
    super().__init__(input_size, hidden_size, cell="minlstm", log_space=log_space, **settings)


class SLSTMCell(Cell):
  """One sLSTM step: :class:`Cell` with ``cell="slstm"``; ``cell(state, x) -> (state, h)``, for streaming.

  Args:
    input_size: ``I``.
    hidden_size: ``H``, a multiple of ``num_heads``.
    num_heads: heads of the block-diagonal recurrence, as :func:`jaxlstm.slstm_init`.
    forget_gate: ``"sigmoid"`` (the default, as xlstm's) or ``"exp"``.
    **settings: ``dtype``, ``rngs`` and ``params``, as :class:`Cell`.

  Example:
    >>> cell = jaxlstm.nnx.SLSTMCell(3, 4, forget_gate="exp", rngs=nnx.Rngs(0))
    >>> state, h = cell(cell.initial_state((2,)), jnp.zeros((2, 3)))
    >>> state._fields, h.shape
    (('h', 'c', 'n', 'm'), (2, 4))
  """

  CELL = "slstm"

  def __init__(
    self, input_size: int, hidden_size: int, *, num_heads: int = 1, forget_gate: str = "sigmoid", **settings
  ):
    super().__init__(input_size, hidden_size, cell="slstm", num_heads=num_heads, forget_gate=forget_gate, **settings)
