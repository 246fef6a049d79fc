"""Flax Linen modules: thin shells over jaxlstm's pure functions, for any registered cell.

The same set as :mod:`jaxlstm.nnx`: generic :class:`Layer`, :class:`Stack`
and :class:`Cell` modules over any cell of the registry (``cell="lstm"``,
``"gru"``, ``"rnn"`` or one added with :func:`jaxlstm.register_cell`, and
its init options in ``options``), and the named variants :class:`LSTM`,
:class:`GRU`, :class:`RNN`, :class:`MinGRU`, :class:`MinLSTM`, :class:`SLSTM`,
:class:`LSTMCell`, :class:`GRUCell`, :class:`RNNCell`, :class:`MinGRUCell`,
:class:`MinLSTMCell` and :class:`SLSTMCell`, whose attributes spell out their cell's options. Settings
are module attributes; the input size is taken from the input at ``init``.
Every forward runs a :mod:`jaxlstm` function.

**Variables.** Each module has a single entry, ``"weights"``, in the
``"params"`` collection, and it holds exactly the functional params: an
:class:`jaxlstm.LSTMParams` (GRU/RNN likewise), or for :class:`Stack` the
tuple of :func:`jaxlstm.stack_init`. It is initialized by the functional
init with the module's ``"params"`` rng::

  variables = module.init(key, xs)
  params = variables["params"]["weights"]   # == from_variables(variables)
  module.apply(variables, xs)               # == jaxlstm.layer(params, xs)[1]
  module.apply(to_variables(params), xs)    # any functional params

``Module.from_params(params)`` returns a module configured for existing
params together with their variables. Cell options that are not arrays (an
RNN's ``activation``) are static fields of the params: applying a module to
params built with another value raises instead of computing another model.

**Outputs**, as in :mod:`jaxlstm.nnx`: ``return_sequences=True`` by default
(the functional API's and Flax's convention; Keras' default is ``False``);
``False`` gives the last valid output, the final ``h``; ``return_state=True``
returns ``(state, output)``.

**Dropout** (:class:`Stack` only, between layers) needs ``deterministic``, as
an attribute or a call argument, and a ``"dropout"`` rng when it is
``False``: ``module.apply(variables, xs, deterministic=False,
rngs={"dropout": key})``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxlstm._src.extras import missing

try:  # without the package, name the extra that installs it
  from flax import linen
  from flax.core import FrozenDict
except ImportError as e:
  raise missing("flax", extra="flax", needed_by="jaxlstm.linen") from e

import jaxlstm
from jaxlstm._src.cells.registry import get_cell
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
  "INITIAL_STATE",
  "WEIGHTS",
  "from_variables",
  "to_variables",
]

WEIGHTS = "weights"
"""Name of the one entry of the ``"params"`` collection that holds the functional params."""

INITIAL_STATE = "h0"
"""Name of the ``"params"`` entry of a learned initial state (``learn_initial_state=True``), in the layout of
:func:`jaxlstm.initial_state_init`."""


def to_variables(params: Any) -> dict:
  """The variables dict of a module holding functional ``params``.

  Args:
    params: one layer's params, or a stack's tuple.

  Returns:
    ``{"params": {"weights": params}}``, for ``module.apply``.

  Example:
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 4)
    >>> jaxlstm.linen.GRU(4).apply(jaxlstm.linen.to_variables(params), jnp.ones((2, 5, 3))).shape
    (2, 5, 4)
  """
  return {"params": {WEIGHTS: params}}


def from_variables(variables: Any) -> Any:
  """The functional params in a module's variables.

  Args:
    variables: what ``module.init`` returns (or grads of the same structure).

  Returns:
    ``variables["params"]["weights"]``: one layer's params, or a stack's tuple.

  Example:
    >>> variables = jaxlstm.linen.LSTM(4).init(jax.random.key(0), jnp.ones((2, 5, 3)))
    >>> jaxlstm.linen.from_variables(variables).w_x.shape
    (3, 16)
  """
  return variables["params"][WEIGHTS]


def _input_size(xs: Any) -> int:
  shape = jnp.shape(xs)
  if not shape:
    raise ValueError(f"xs must have a feature axis (I,) last; got shape {shape}")
  return shape[-1]


def _setting(default: Any) -> Any:
  """A keyword-only attribute: it keeps the cell's options next to ``hidden_size`` in the positional order."""
  return dataclasses.field(default=default, kw_only=True)


class _Recurrent(linen.Module):
  """Base of every module here: declares the ``weights`` param from a functional init; see the module docstring."""

  hidden_size: int
  dtype: Any = _setting(jnp.float32)

  CELL: ClassVar[str | None] = None  # the named variants' cell; their attributes are its options

  def __post_init__(self):
    # Linen modules must hash (jit static arguments, Flax's own caches), so a dict of options is frozen.
    if isinstance(getattr(self, "options", None), Mapping):
      # ``options`` is a field of the subclasses that have it (Layer, Cell, ...), not of this base.
      self.options = FrozenDict(self.options)  # type: ignore[has-type,var-annotated]
    super().__post_init__()

  @linen.nowrap
  def _spec(self) -> tuple[str, dict]:
    """The cell's name and its init options, ``dtype`` included, checked against the registry."""
    if self.CELL is not None:
      name, options = self.CELL, {n: getattr(self, n) for n in get_cell(self.CELL).options}
    else:
      name, options = self.cell, dict(self.options)
    return name, dict(check_cell_options(get_cell(name), options), dtype=self.dtype)

  def _declare(self, init, input_size: int, args: tuple, options: dict) -> Any:
    params = self.param(WEIGHTS, lambda key: init(key, input_size, *args, **options))
    if not self.is_initializing():
      check_layout(f'variables["params"]["{WEIGHTS}"]', params, shape_params(init, input_size, *args, **options))
    return params

  @classmethod
  def _from_params(cls, params: Any, attrs: dict) -> tuple[Any, dict]:
    record = check_kind(params, cls.CELL)
    options = params_options(params)
    attrs = restated({**options, "cell": record.name}, attrs)
    dtype = options.pop("dtype")
    if cls.CELL is None:
      # cls is then a generic module (Layer, Cell, ...), whose fields cell and options mypy's view of this base lacks.
      module = cls(params.hidden_size, cell=record.name, options=options, dtype=dtype, **attrs)  # type: ignore[call-arg]
    else:
      module = cls(params.hidden_size, **options, dtype=dtype, **attrs)
    return module, _with_initial_state(module, params)


def _with_initial_state(module: linen.Module, params: Any) -> dict:
  """The variables of ``module`` for ``params``, with a zero learned initial state when the module has one."""
  variables = to_variables(params)
  if getattr(module, "learn_initial_state", False):
    variables["params"][INITIAL_STATE] = jaxlstm.initial_state_init(params)
  return variables


def _initial_state(module: linen.Module, params: Any, given: Any, xs: jax.Array) -> Any:
  """The state a call starts from: ``given``, else the learned one (declared here) broadcast, else zeros."""
  h0 = None
  if module.learn_initial_state:
    h0 = module.param(INITIAL_STATE, lambda key: jaxlstm.initial_state_init(params))
  return given_or_initial(given, h0, xs, time_major=module.time_major)


class _LayerBase(_Recurrent):
  """The call of :class:`Layer` and its named variants."""

  impl: str = _setting("auto")
  reverse: bool = _setting(False)
  return_sequences: bool = _setting(True)
  return_state: bool = _setting(False)
  time_major: bool = _setting(False)
  unroll: int | bool | None = _setting(None)
  remat: int | None = _setting(None)
  learn_initial_state: bool = _setting(False)
  input_dropout: float = _setting(0.0)
  recurrent_dropout: float = _setting(0.0)
  zoneout: float | Mapping[str, float] = _setting(0.0)
  weight_drop: float = _setting(0.0)
  deterministic: bool | None = _setting(None)

  @classmethod
  def from_params(cls, params: Any, **attrs) -> tuple[Any, dict]:
    """A module configured for existing functional params of one layer, and its variables.

    The cell and its options (``dtype``, ``activation``, ``peephole``...)
    come from the params.

    Args:
      params: one layer's params of a registered cell (of the class's own
        cell for a named variant such as :class:`LSTM`).
      **attrs: other attributes (``return_sequences``, ``reverse``,
        ``impl``...). A cell option may be restated, but not changed.

    Returns:
      ``(module, variables)``, ready for ``module.apply(variables, xs)``.

    Raises:
      TypeError: ``params`` are not a registered cell's (or not the named
        variant's cell's).
      ValueError: an attribute that contradicts the params.

    Example:
      >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 4, activation="relu")
      >>> module, variables = jaxlstm.linen.RNN.from_params(params)
      >>> module.activation, module.apply(variables, jnp.ones((2, 5, 3))).shape
      ('relu', (2, 5, 4))
    """
    return cls._from_params(params, attrs)

  @linen.compact
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
    deterministic: bool | None = None,
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
      return_sequences: override the attribute for this call.
      return_state: override the attribute for this call.
      deterministic: disable the regularizers' masks; give it here or as the attribute, not both.

    Returns:
      ``hs (*batch, T, F)``, or the last valid output ``(*batch, F)`` if not
      ``return_sequences``; with ``return_state``, ``(state, output)``.

    Raises:
      ValueError: variables whose layout the attributes do not describe (for
        instance params built with another ``activation``).

    Example:
      >>> layer = jaxlstm.linen.Layer(4, cell="gru")
      >>> xs = jnp.ones((2, 5, 3))
      >>> variables = layer.init(jax.random.key(0), xs)
      >>> state, last = layer.apply(variables, xs, return_sequences=False, return_state=True)
      >>> last.shape, bool((last == state.h).all())
      ((2, 4), True)
    """
    name, options = self._spec()
    params = self._declare(get_cell(name).init, _input_size(xs), (self.hidden_size,), options)
    initial_state = _initial_state(self, params, initial_state, xs)
    training = needs_rng(self) and not linen.merge_param("deterministic", self.deterministic, deterministic)
    state, hs = jaxlstm.layer(
      params,
      xs,
      initial_state,
      lengths=lengths,
      mask=mask,
      resets=resets,
      reverse=self.reverse,
      time_major=self.time_major,
      unroll=self.unroll,
      impl=self.impl,
      remat=self.remat,
      key=self.make_rng("dropout") if training else None,
      **regularizer_rates(self, training),
    )
    return layer_output(
      state,
      hs,
      return_sequences=pick(return_sequences, self.return_sequences),
      return_state=pick(return_state, self.return_state),
    )


class Layer(_LayerBase):
  """One recurrent layer of any registered cell over a sequence; runs :func:`jaxlstm.layer`.

  Attributes:
    hidden_size: ``H``.
    cell: the name of a registered cell: ``"lstm"``, ``"gru"``, ``"rnn"`` or
      one added with :func:`jaxlstm.register_cell`.
    options: the cell's init options, such as ``{"peephole": True}`` for
      ``"lstm"`` or ``{"activation": "relu"}`` for ``"rnn"``; kept as a
      ``FrozenDict``.
    dtype: parameter dtype.
    impl: ``"auto"`` (the fastest kernel that can run the call) or a
      kernel's name, as :func:`jaxlstm.layer`.
    reverse: process the sequence from the end (outputs keep their order).
    return_sequences: return the whole output sequence ``(*batch, T, F)``
      (the default); if ``False``, only the last valid output ``(*batch, F)``.
    return_state: also return the final state, as ``(state, output)``.
    time_major: inputs are ``(T, *batch, I)`` instead of ``(*batch, T, I)``.
    unroll: ``lax.scan`` unroll factor; ``None`` lets the kernel choose.
    remat: checkpoint every ``remat`` steps, as :func:`jaxlstm.layer`.
    learn_initial_state: declare a trainable initial state, the param
      :data:`INITIAL_STATE` (zeros at first, :func:`jaxlstm.initial_state_init`),
      used when a call gives no ``initial_state``; ``resets`` go back to it too.
      The named variants (:class:`LSTM`, ...) take it as well.
    input_dropout, recurrent_dropout, zoneout, weight_drop: the recurrent
      regularizers (:mod:`jaxlstm.regularizers`), drawn from the
      ``"dropout"`` rng; the named variants take them as well.
    deterministic: disable the regularizers' masks, zoneout taking its
      expectation; may be given at call time instead (one of the two, as
      ``nn.Dropout``). Needed only when a regularizer is on.

  Example:
    >>> layer = jaxlstm.linen.Layer(4, cell="rnn", options={"activation": "relu"})
    >>> xs = jnp.ones((2, 5, 3))
    >>> variables = layer.init(jax.random.key(0), xs)
    >>> jaxlstm.linen.from_variables(variables).activation, layer.apply(variables, xs).shape
    ('relu', (2, 5, 4))
  """

  cell: str = "lstm"
  options: Mapping[str, Any] = FrozenDict()


class LSTM(_LayerBase):
  """One LSTM layer: :class:`Layer` with ``cell="lstm"``, its options as attributes.

  Attributes:
    hidden_size: ``H``.
    peephole: add diagonal peephole connections, as :func:`jaxlstm.lstm_init`.
    layer_norm: layer-normalize the gates and the cell, as :func:`jaxlstm.lstm_init`.
    proj_size: project ``h`` to this size, as :func:`jaxlstm.lstm_init`.
    forget_bias: the forget gate's initial bias.
    dtype, impl, reverse, return_sequences, return_state, time_major, unroll,
      remat: keyword-only, as :class:`Layer`.

  Example:
    >>> layer = jaxlstm.linen.LSTM(4)
    >>> variables = layer.init(jax.random.key(0), jnp.zeros((2, 5, 3)))
    >>> layer.apply(variables, jnp.zeros((2, 5, 3))).shape
    (2, 5, 4)
  """

  peephole: bool = False
  layer_norm: bool = False
  proj_size: int | None = None
  forget_bias: float = 1.0

  CELL: ClassVar[str] = "lstm"


class GRU(_LayerBase):
  """One GRU layer (PyTorch's semantics): :class:`Layer` with ``cell="gru"``.

  Attributes:
    hidden_size: ``H``.
    dtype, impl, reverse, return_sequences, return_state, time_major, unroll,
      remat: keyword-only, as :class:`Layer`.

  Example:
    >>> layer = jaxlstm.linen.GRU(4, return_sequences=False)
    >>> variables = layer.init(jax.random.key(0), jnp.zeros((2, 5, 3)))
    >>> layer.apply(variables, jnp.zeros((2, 5, 3))).shape
    (2, 4)
  """

  CELL: ClassVar[str] = "gru"


class RNN(_LayerBase):
  """One Elman RNN layer: :class:`Layer` with ``cell="rnn"``.

  Attributes:
    hidden_size: ``H``.
    activation: ``"tanh"`` or ``"relu"``; stored in the params.
    dtype, impl, reverse, return_sequences, return_state, time_major, unroll,
      remat: keyword-only, as :class:`Layer`.

  Example:
    >>> layer = jaxlstm.linen.RNN(4, activation="relu")
    >>> variables = layer.init(jax.random.key(0), jnp.ones((2, 5, 3)))
    >>> jaxlstm.linen.from_variables(variables).activation
    'relu'
  """

  activation: str = "tanh"

  CELL: ClassVar[str] = "rnn"


class MinGRU(_LayerBase):
  """One minGRU layer (Feng et al., 2024): :class:`Layer` with ``cell="mingru"``; trains on the parallel kernel.

  Attributes:
    hidden_size: ``H``.
    log_space: the paper's log-space version (the default), as :func:`jaxlstm.mingru_init`.
    dtype, impl, reverse, return_sequences, return_state, time_major, unroll,
      remat: keyword-only, as :class:`Layer`.

  Example:
    >>> layer = jaxlstm.linen.MinGRU(4)
    >>> variables = layer.init(jax.random.key(0), jnp.zeros((2, 5, 3)))
    >>> layer.apply(variables, jnp.zeros((2, 5, 3))).shape
    (2, 5, 4)
  """

  log_space: bool = True

  CELL: ClassVar[str] = "mingru"


class MinLSTM(_LayerBase):
  """One minLSTM layer (Feng et al., 2024): :class:`Layer` with ``cell="minlstm"``; trains on the parallel kernel.

  Attributes:
    hidden_size: ``H``.
    log_space: the paper's log-space version (the default), as :func:`jaxlstm.minlstm_init`.
    dtype, impl, reverse, return_sequences, return_state, time_major, unroll,
      remat: keyword-only, as :class:`Layer`.

  Example:
    >>> layer = jaxlstm.linen.MinLSTM(4, log_space=False)
    >>> variables = layer.init(jax.random.key(0), jnp.zeros((2, 5, 3)))
    >>> jaxlstm.linen.from_variables(variables).log_space
    False
  """

  log_space: bool = True

  CELL: ClassVar[str] = "minlstm"


class SLSTM(_LayerBase):
  """One sLSTM layer (Beck et al., 2024, xLSTM): :class:`Layer` with ``cell="slstm"``.

  Attributes:
    hidden_size: ``H``, a multiple of ``num_heads``.
    num_heads: heads of the block-diagonal recurrence, as :func:`jaxlstm.slstm_init`.
    forget_gate: ``"sigmoid"`` (the default, as xlstm's) or ``"exp"``.
    dtype, impl, reverse, return_sequences, return_state, time_major, unroll,
      remat: keyword-only, as :class:`Layer`.

  Example:
    >>> layer = jaxlstm.linen.SLSTM(4, num_heads=2)
    >>> variables = layer.init(jax.random.key(0), jnp.zeros((2, 5, 3)))
    >>> jaxlstm.linen.from_variables(variables).r.shape, layer.apply(variables, jnp.ones((2, 5, 3))).shape
    ((2, 2, 8), (2, 5, 4))
  """

  num_heads: int = 1
  forget_gate: str = "sigmoid"

  CELL: ClassVar[str] = "slstm"


class Stack(_Recurrent):
  """A stack of recurrent layers of any registered cell, optionally bidirectional; runs :func:`jaxlstm.stack`.

  ``variables["params"]["weights"]`` is the tuple of :func:`jaxlstm.stack_init`.

  Attributes:
    hidden_size: ``H`` of every layer.
    num_layers: number of layers.
    cell: the name of a registered cell: ``"lstm"``, ``"gru"``, ``"rnn"`` or
      one added with :func:`jaxlstm.register_cell`.
    bidirectional: give each layer a forward and a backward direction.
    merge: ``"concat"``, ``"sum"``, ``"mean"`` or ``"mul"``.
    dropout: drop rate on each layer's output except the last.
    input_dropout, recurrent_dropout, zoneout, weight_drop: the recurrent
      regularizers of every layer (:mod:`jaxlstm.regularizers`): Keras'
      ``dropout`` and ``recurrent_dropout``, zoneout (a rate, or
      ``{state field: rate}``) and DropConnect on ``w_h``; their masks come
      from the ``"dropout"`` rng.
    deterministic: disable dropout and the regularizers' masks, zoneout
      taking its expectation; may be given at call time instead (one of the
      two, as ``nn.Dropout``). Needed only when one of them is on.
    activation: shorthand for ``options["activation"]`` (``cell="rnn"``).
    peephole: shorthand for ``options["peephole"]`` (``cell="lstm"``).
    layer_norm: shorthand for ``options["layer_norm"]`` (``cell="lstm"``).
    proj_size: shorthand for ``options["proj_size"]`` (``cell="lstm"``).
    forget_bias: shorthand for ``options["forget_bias"]`` (``cell="lstm"``).
      The shorthands keep the attributes of the per-cell modules; ``None``
      leaves the cell's default.
    options: the cell's init options, for every layer; kept as a ``FrozenDict``.
    dtype: parameter dtype; keyword-only, as are the attributes below.
    impl: ``"auto"`` or a kernel's name, for every layer (see :func:`jaxlstm.layer`).
    return_sequences: return the last layer's whole output sequence (the
      default); if ``False``, only its last valid output ``(*batch, F)``.
    return_state: also return every layer's final state, as ``(states, output)``.
    time_major: inputs are ``(T, *batch, I)`` instead of ``(*batch, T, I)``.
    unroll: ``lax.scan`` unroll factor; ``None`` lets the kernel choose.
    remat: checkpoint every ``remat`` steps in each layer.
    learn_initial_state: declare a trainable initial state per layer and
      direction, the param :data:`INITIAL_STATE`, used when a call gives no
      ``initial_states``; ``resets`` go back to it too.

  Example:
    >>> model = jaxlstm.linen.Stack(4, num_layers=2, bidirectional=True)
    >>> xs = jnp.zeros((2, 5, 3))
    >>> variables = model.init(jax.random.key(0), xs)
    >>> model.apply(variables, xs, lengths=jnp.array([5, 3])).shape
    (2, 5, 8)
    >>> relu = jaxlstm.linen.Stack(4, cell="rnn", activation="relu")
    >>> jaxlstm.linen.from_variables(relu.init(jax.random.key(0), xs))[0].activation
    'relu'
  """

  num_layers: int = 1
  cell: str = "lstm"
  bidirectional: bool = False
  merge: str = "concat"
  dropout: float = 0.0
  input_dropout: float = 0.0
  recurrent_dropout: float = 0.0
  zoneout: float | Mapping[str, float] = 0.0
  weight_drop: float = 0.0
  deterministic: bool | None = None
  activation: str | None = None
  peephole: bool | None = None
  layer_norm: bool | None = None
  proj_size: int | None = None
  forget_bias: float | None = None
  options: Mapping[str, Any] = FrozenDict()
  impl: str = _setting("auto")
  return_sequences: bool = _setting(True)
  return_state: bool = _setting(False)
  time_major: bool = _setting(False)
  unroll: int | bool | None = _setting(None)
  remat: int | None = _setting(None)
  learn_initial_state: bool = _setting(False)

  SHORTHANDS: ClassVar[tuple[str, ...]] = ("activation", "peephole", "layer_norm", "proj_size", "forget_bias")

  @linen.nowrap
  def _spec(self) -> tuple[str, dict]:
    options = dict(self.options)
    for key in self.SHORTHANDS:
      value = getattr(self, key)
      if value is None:
        continue
      if key in options and options[key] != value:
        raise ValueError(f"{key}={value!r} conflicts with options[{key!r}]={options[key]!r}; give it once")
      options[key] = value
    return self.cell, dict(check_cell_options(get_cell(self.cell), options), dtype=self.dtype)

  @classmethod
  def from_params(cls, params: Any, *, merge: str = "concat", **attrs) -> tuple[Stack, dict]:
    """A module configured for the params of :func:`jaxlstm.stack_init`, and its variables.

    The cell, the number of layers, the directions and the cell options come
    from the params.

    Args:
      params: the tuple of layer params.
      merge: the merge the params were built for (it fixes layer sizes).
      **attrs: other attributes (``dropout``, ``return_sequences``...). A cell
        option may be restated, but not changed.

    Returns:
      ``(module, variables)``, ready for ``module.apply(variables, xs)``.

    Raises:
      TypeError, ValueError: params that are not a stack built with
        ``merge``, or an attribute that contradicts them.

    Example:
      >>> params = jaxlstm.stack_init(jax.random.key(0), 3, 4, 2, cell="rnn", activation="relu")
      >>> model, variables = jaxlstm.linen.Stack.from_params(params)
      >>> model.options["activation"], model.apply(variables, jnp.ones((2, 5, 3))).shape
      ('relu', (2, 5, 4))
    """
    options = stack_options(params, merge)
    attrs = restated(options, attrs)
    del options["input_size"]
    fixed = {k: options.pop(k) for k in ("hidden_size", "num_layers", "cell", "bidirectional", "dtype")}
    module = cls(**fixed, merge=merge, options=options, **attrs)
    return module, _with_initial_state(module, tuple(params))

  @linen.compact
  def __call__(
    self,
    xs: jax.Array,
    initial_states: Any = None,
    *,
    lengths: jax.Array | None = None,
    mask: jax.Array | None = None,
    resets: jax.Array | None = None,
    deterministic: bool | None = None,
    return_sequences: bool | None = None,
    return_state: bool | None = None,
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
      deterministic: disable dropout; give it here or as the attribute, not
        both (as ``nn.Dropout``).
      return_sequences: override the attribute for this call.
      return_state: override the attribute for this call.

    Returns:
      The last layer's ``hs (*batch, T, F)``, or its last valid output
      ``(*batch, F)`` if not ``return_sequences``; with ``return_state``,
      ``(states, output)`` where ``states`` has one state per layer.

    Example:
      >>> model = jaxlstm.linen.Stack(4, num_layers=2, cell="gru", dropout=0.5)
      >>> xs = jnp.ones((2, 5, 3))
      >>> variables = model.init(jax.random.key(0), xs, deterministic=True)
      >>> model.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
      (2, 5, 4)
    """
    cell, options = self._spec()
    options.update(cell=cell, bidirectional=self.bidirectional, merge=self.merge)
    params = self._declare(jaxlstm.stack_init, _input_size(xs), (self.hidden_size, self.num_layers), options)
    initial_states = _initial_state(self, params, initial_states, xs)
    key = None
    training = needs_rng(self) and not linen.merge_param("deterministic", self.deterministic, deterministic)
    if training:
      key = self.make_rng("dropout")
    states, hs = jaxlstm.stack(
      params,
      xs,
      initial_states,
      lengths=lengths,
      mask=mask,
      resets=resets,
      dropout=0.0 if key is None else self.dropout,
      key=key,
      merge=self.merge,
      time_major=self.time_major,
      unroll=self.unroll,
      impl=self.impl,
      remat=self.remat,
      **regularizer_rates(self, training),
    )
    out = layer_output(
      states[-1],
      hs,
      return_sequences=pick(return_sequences, self.return_sequences),
      return_state=False,
      merge=self.merge,
    )
    return (states, out) if pick(return_state, self.return_state) else out


class _CellBase(_Recurrent):
  """The step of :class:`Cell` and its named variants."""

  @classmethod
  def from_params(cls, params: Any) -> tuple[Any, dict]:
    """A module configured for existing functional params of one layer, and its variables.

    Args:
      params: one layer's params of a registered cell (of the class's own
        cell for a named variant such as :class:`LSTMCell`).

    Returns:
      ``(module, variables)``; the cell and its options come from the params.

    Raises:
      TypeError: ``params`` are not a registered cell's (or not the named
        variant's cell's).

    Example:
      >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 4, activation="relu")
      >>> cell, variables = jaxlstm.linen.Cell.from_params(params)
      >>> cell.cell, cell.options["activation"]
      ('rnn', 'relu')
    """
    return cls._from_params(params, {})

  @linen.nowrap
  def initial_state(self, batch_shape: tuple[int, ...] = ()) -> Any:
    """The all-zero state; it needs no params, so it works on an unbound module.

    Args:
      batch_shape: the leading batch axes of every state leaf.

    Returns:
      The cell's state (say :class:`jaxlstm.LSTMState`), leaves ``(*batch_shape, F)``.

    Example:
      >>> state = jaxlstm.linen.LSTMCell(4, proj_size=2).initial_state((5,))
      >>> state.h.shape, state.c.shape
      ((5, 2), (5, 4))
    """
    name, options = self._spec()
    cell = get_cell(name)
    # The state does not depend on the input size, so any (here 1) gives its shapes.
    return cell.zero_state(shape_params(cell.init, 1, self.hidden_size, **options), tuple(batch_shape))

  @linen.compact
  def __call__(self, state: Any, x: jax.Array) -> tuple[Any, jax.Array]:
    """One step.

    Args:
      state: the cell's state, leaves ``(..., F)``.
      x: the input ``(..., I)``; ``I`` sets the params' input size at ``init``.

    Returns:
      ``(new_state, y)``: the next state and the step's output ``(..., F)``.

    Example:
      >>> cell = jaxlstm.linen.GRUCell(4)
      >>> state, x = cell.initial_state((2,)), jnp.ones((2, 3))
      >>> variables = cell.init(jax.random.key(0), state, x)
      >>> cell.apply(variables, state, x)[1].shape
      (2, 4)
    """
    name, options = self._spec()
    cell = get_cell(name)
    params = self._declare(cell.init, _input_size(x), (self.hidden_size,), options)
    return cell.step(params, state, x)


class Cell(_CellBase):
  """One step of any registered cell, for hand-written loops: ``cell(state, x) -> (state, y)``.

  It runs the cell's registered ``step`` (e.g. :func:`jaxlstm.lstm_step`).

  Attributes:
    hidden_size: ``H``.
    cell: the name of a registered cell: ``"lstm"``, ``"gru"``, ``"rnn"`` or
      one added with :func:`jaxlstm.register_cell`.
    options: the cell's init options; kept as a ``FrozenDict``.
    dtype: parameter dtype; keyword-only.

  Example:
    >>> cell = jaxlstm.linen.Cell(4, cell="rnn", options={"activation": "relu"})
    >>> state, xs = cell.initial_state((2,)), jnp.ones((5, 2, 3))
    >>> variables = cell.init(jax.random.key(0), state, xs[0])
    >>> for x in xs:
    ...   state, y = cell.apply(variables, state, x)
    >>> y.shape, bool((y >= 0).all())
    ((2, 4), True)
  """

  cell: str = "lstm"
  options: Mapping[str, Any] = FrozenDict()


class LSTMCell(_CellBase):
  """One LSTM step: :class:`Cell` with ``cell="lstm"``; ``cell(state, x) -> (state, h)``.

  Attributes:
    hidden_size: ``H``.
    peephole: add diagonal peephole connections, as :func:`jaxlstm.lstm_init`.
    layer_norm: layer-normalize the gates and the cell, as :func:`jaxlstm.lstm_init`.
    proj_size: project ``h`` to this size, as :func:`jaxlstm.lstm_init`.
    forget_bias: the forget gate's initial bias.
    dtype: parameter dtype; keyword-only.

  Example:
    >>> cell = jaxlstm.linen.LSTMCell(4)
    >>> state = cell.initial_state((2,))
    >>> variables = cell.init(jax.random.key(0), state, jnp.zeros((2, 3)))
    >>> state, h = cell.apply(variables, state, jnp.zeros((2, 3)))
    >>> h.shape
    (2, 4)
  """

  peephole: bool = False
  layer_norm: bool = False
  proj_size: int | None = None
  forget_bias: float = 1.0

  CELL: ClassVar[str] = "lstm"


class GRUCell(_CellBase):
  """One GRU step: :class:`Cell` with ``cell="gru"``; ``cell(state, x) -> (state, h)``.

  Attributes:
    hidden_size: ``H``.
    dtype: parameter dtype; keyword-only.

  Example:
    >>> jaxlstm.linen.GRUCell(4).initial_state((2,)).h.shape
    (2, 4)
  """

  CELL: ClassVar[str] = "gru"


class RNNCell(_CellBase):
  """One Elman RNN step: :class:`Cell` with ``cell="rnn"``; ``cell(state, x) -> (state, h)``.

  Attributes:
    hidden_size: ``H``.
    activation: ``"tanh"`` or ``"relu"``; stored in the params.
    dtype: parameter dtype; keyword-only.

  Example:
    >>> cell = jaxlstm.linen.RNNCell(4, activation="relu")
    >>> variables = cell.init(jax.random.key(0), cell.initial_state(), jnp.ones(3))
    >>> jaxlstm.linen.from_variables(variables).activation
    'relu'
  """

  activation: str = "tanh"

  CELL: ClassVar[str] = "rnn"


class MinGRUCell(_CellBase):
  """One minGRU step: :class:`Cell` with ``cell="mingru"``; ``cell(state, x) -> (state, h)``, for streaming.

  Attributes:
    hidden_size: ``H``.
    log_space: the paper's log-space version (the default), as :func:`jaxlstm.mingru_init`.
    dtype: parameter dtype; keyword-only.

  Example:
    >>> jaxlstm.linen.MinGRUCell(4).initial_state((2,)).h.shape
    (2, 4)
  """

  log_space: bool = True

  CELL: ClassVar[str] = "mingru"


class MinLSTMCell(_CellBase):
  """One minLSTM step: :class:`Cell` with ``cell="minlstm"``; ``cell(state, x) -> (state, h)``, for streaming.

  Attributes:
    hidden_size: ``H``.
    log_space: the paper's log-space version (the default), as :func:`jaxlstm.minlstm_init`.
    dtype: parameter dtype; keyword-only.

  Example:
    >>> cell = jaxlstm.linen.MinLSTMCell(4)
    >>> variables = cell.init(jax.random.key(0), cell.initial_state(), jnp.ones(3))
    >>> cell.apply(variables, cell.initial_state(), jnp.ones(3))[1].shape
    (4,)
  """

  log_space: bool = True

  CELL: ClassVar[str] = "minlstm"


class SLSTMCell(_CellBase):
  """One sLSTM step: :class:`Cell` with ``cell="slstm"``; ``cell(state, x) -> (state, h)``, for streaming.

  Attributes:
    hidden_size: ``H``, a multiple of ``num_heads``.
    num_heads: heads of the block-diagonal recurrence, as :func:`jaxlstm.slstm_init`.
    forget_gate: ``"sigmoid"`` (the default, as xlstm's) or ``"exp"``.
    dtype: parameter dtype; keyword-only.

  Example:
    >>> cell = jaxlstm.linen.SLSTMCell(4, forget_gate="exp")
    >>> variables = cell.init(jax.random.key(0), cell.initial_state(), jnp.ones(3))
    >>> cell.apply(variables, cell.initial_state(), jnp.ones(3))[0].n
    Array([1., 1., 1., 1.], dtype=float32)
  """

  num_heads: int = 1
  forget_gate: str = "sigmoid"

  CELL: ClassVar[str] = "slstm"
