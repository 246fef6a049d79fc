"""Equinox modules: thin shells over jaxlstm's pure functions, for any registered cell.

Three generic modules, as in :mod:`jaxlstm.nnx`:

* :class:`Layer`, one recurrent layer over a sequence (:func:`jaxlstm.layer`);
* :class:`Stack`, several layers, optionally bidirectional, with dropout
  between them (:func:`jaxlstm.stack`);
* :class:`Cell`, one step, for hand-written loops: ``cell(state, x) -> (state, y)``.

Each takes ``cell="lstm"`` (or ``"gru"``, ``"rnn"``, or a cell added with
:func:`jaxlstm.register_cell`) and that cell's init options as keywords, and
asks the cell registry for everything else: ``Layer(3, 5, cell="gru",
key=key)``. Equinox is imported with this module only; ``import jaxlstm``
does not import it (``pip install 'jaxlstm[equinox]'``).

**Param layout.** A module's one field of arrays is ``params``: the very
NamedTuple that the functional init returns (:class:`jaxlstm.LSTMParams`, or
the tuple of :func:`jaxlstm.stack_init`), plain arrays. So::

  jaxlstm.layer(module.params, xs)  # == module(xs, return_state=True)
  Layer(I, H, key=key).params       # == jaxlstm.lstm_init(key, I, H)
  Layer.from_params(params)         # wraps existing functional params (or Layer(I, H, params=params))

and ``eqx.filter(module, eqx.is_array)`` is the params' arrays, for optax.
Cell options that are not arrays, such as an RNN's ``activation``, are static
fields of the params, so a module built from relu params computes relu.

**Equinox's conventions.** Params are initialized from a ``key=`` keyword.
The call settings (``return_sequences``, ``reverse``, ``impl``...) are static
fields. :class:`Stack` draws its dropout masks from the call's ``key=`` and
skips them with ``inference=True``, as ``eqx.nn.Dropout`` does; its
``inference`` is an ordinary field, so ``eqx.nn.inference_mode(model)``
switches it, and jitting a model takes ``eqx.filter_jit``, which keeps the
flag a Python bool. Inputs may have any leading batch axes (or none), as in
the functional API, so ``jax.vmap`` is optional.

**Outputs**, as in :mod:`jaxlstm.nnx`: ``return_sequences`` defaults to
``True``; with ``False`` a layer returns its last valid output ``(*batch, F)``
(the final ``h``, which honours ``lengths`` and ``mask``), and with
``return_state=True`` a call returns ``(state, output)``, in the functional
API's order. :class:`Cell` takes ``(state, x)`` and returns ``(state, y)``,
the scan body's contract; ``eqx.nn.LSTMCell`` takes ``(input, hidden)`` and
returns the hidden state (:mod:`jaxlstm.interop.equinox` converts its
weights).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from jaxlstm._src.extras import missing

try:  # without the package, name the extra that installs it
  import equinox as eqx
except ImportError as e:
  raise missing("equinox", extra="equinox", needed_by="jaxlstm.equinox") from e
import jax
import jax.numpy as jnp

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
from jaxlstm._src.stack import Bidirectional

__all__ = ["Cell", "Layer", "Stack"]


def _init_or_check(who: str, init, args: tuple, options: dict, key: jax.Array | None, params: Any) -> Any:
  """``init(key, *args, **options)``, or ``params`` once checked against the layout that call would give."""
  if params is None:
    if key is None:
      raise ValueError(f"{who} needs key to initialize its params (or pass params=...)")
    return init(key, *args, **options)
  check_layout("params", params, shape_params(init, *args, **options))
  return params


def _one_cell(
  input_size: int, hidden_size: int, cell: str, dtype: Any, options: dict, key: jax.Array | None, params: Any, who: str
) -> Any:
  """One layer's params of the cell named ``cell``: what :class:`Layer` and :class:`Cell` share."""
  record = get_cell(cell)
  options = dict(check_cell_options(record, options), dtype=dtype)
  return _init_or_check(who, record.init, (input_size, hidden_size), options, key, params)


def _from_one_cell(cls: type, params: Any, settings: dict) -> Any:
  """``cls(...)`` around one layer's ``params``, its cell and options read from them."""
  record = check_kind(params, None)
  options = params_options(params)
  settings = restated({**options, "cell": record.name}, settings)
  return cls(params.input_size, params.hidden_size, cell=record.name, **options, params=params, **settings)


class _Shell(eqx.Module):
  """What the three modules share: the cell's name and options, read from ``params``.

  An abstract Equinox module: each subclass declares the field ``params``.
  """

  params: eqx.AbstractVar[Any]

  def _first_layer(self) -> Any:
    """The first layer's params: all of them for one cell, ``[0]`` of a stack (its forward direction)."""
    first = self.params if is_cell_params(self.params) else self.params[0]
    return first.forward if isinstance(first, Bidirectional) else first

  @property
  def cell(self) -> str:
    """The name of the module's cell in the registry, e.g. ``"lstm"``.

    Returns:
      The registered name of the cell whose params the module holds (of
      every layer, for a :class:`Stack`).

    Example:
      >>> jaxlstm.equinox.Layer(3, 4, cell="gru", key=jax.random.key(0)).cell
      'gru'
    """
    return cell_of(self._first_layer()).name

  @property
  def options(self) -> dict:
    """The cell's init options that the params hold, ``dtype`` included.

    Returns:
      A dict such as ``{"dtype": float32, "activation": "relu"}``: the options
      that rebuild the params' layout (of every layer, for a :class:`Stack`).

    Example:
      >>> jaxlstm.equinox.Layer(3, 4, cell="rnn", activation="relu", key=jax.random.key(0)).options["activation"]
      'relu'
    """
    return params_options(self._first_layer())


class Layer(_Shell):
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
    key: PRNG key that initializes the params (the cell's own init, so
      ``params == jaxlstm.get_cell(cell).init(key, I, H)``); not needed with
      ``params``.
    params: existing functional params to wrap instead of initializing them;
      their layout must match the other arguments (see :meth:`from_params`).
    **cell_options: the cell's init options, such as ``peephole`` or
      ``proj_size`` for ``"lstm"`` and ``activation`` for ``"rnn"``; they are
      stored in the params.

  Raises:
    TypeError: an option the cell does not take.
    ValueError: ``params`` whose layout the arguments do not describe, or no
      ``key`` and no ``params``.

  Example:
    >>> import equinox as eqx
    >>> layer = jaxlstm.equinox.Layer(3, 5, cell="gru", key=jax.random.key(0))
    >>> hs = layer(jnp.ones((2, 7, 3)), lengths=jnp.array([7, 4]))
    >>> hs.shape, bool((hs[1, 4:] == 0).all())
    ((2, 7, 5), True)
    >>> [a.shape for a in jax.tree.leaves(eqx.filter(layer, eqx.is_array))]
    [(3, 15), (5, 15), (15,), (5,)]
  """

  params: Any  # one layer's functional params, e.g. LSTMParams
  return_sequences: bool = eqx.field(static=True)
  return_state: bool = eqx.field(static=True)
  reverse: bool = eqx.field(static=True)
  time_major: bool = eqx.field(static=True)
  unroll: int | bool | None = eqx.field(static=True)
  impl: str = eqx.field(static=True)
  remat: int | None = eqx.field(static=True)

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
    key: jax.Array | None = None,
    params: Any = None,
    **cell_options,
  ):
    self.params = _one_cell(input_size, hidden_size, cell, dtype, cell_options, key, params, "Layer")
    self.return_sequences, self.return_state = return_sequences, return_state
    self.reverse, self.time_major = reverse, time_major
    self.unroll, self.impl, self.remat = unroll, impl, remat

  @classmethod
  def from_params(cls, params: Any, **settings) -> Layer:
    """Wraps existing functional params of one layer.

    The cell and its options (``dtype``, ``activation``, ``peephole``...) come
    from the params, so nothing about the cell needs repeating.

    Args:
      params: one layer's params of a registered cell.
      **settings: the call settings (``return_sequences``, ``reverse``,
        ``impl``...). A cell option may be restated, but not changed.

    Returns:
      A module whose ``params`` are ``params``.

    Raises:
      TypeError: ``params`` are not a registered cell's.
      ValueError: a setting that contradicts the params.

    Example:
      >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 4, activation="relu")
      >>> layer = jaxlstm.equinox.Layer.from_params(params, reverse=True)
      >>> layer.cell, layer.params.activation, layer.params is params
      ('rnn', 'relu', True)
    """
    return _from_one_cell(cls, params, settings)

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
  ):
    """Runs the layer over a sequence.

    Args:
      xs: inputs ``(*batch, T, I)``, or ``(T, *batch, I)`` if time-major, in
        the params' dtype; ``batch`` may be empty.
      initial_state: the initial state; zeros when ``None``.
      lengths: ``(*batch,)`` lengths of right-padded rows.
      mask: ``(*batch, T)`` flags, ``False`` = skip the step.
      resets: ``(*batch, T)`` flags, ``True`` = reset the state before the step.
      return_sequences: override the module's setting for this call.
      return_state: override the module's setting for this call.
      reverse: override the module's setting for this call.
      time_major: override the module's setting for this call.

    Returns:
      ``hs (*batch, T, F)``, or the last valid output ``(*batch, F)`` if not
      ``return_sequences``; with ``return_state``, ``(state, output)``.

    Raises:
      ValueError, TypeError: as :func:`jaxlstm.layer`, naming the argument
        whose shape or dtype does not match the params.

    Example:
      >>> layer = jaxlstm.equinox.Layer(3, 4, key=jax.random.key(0))
      >>> state, last = layer(jnp.ones((5, 3)), return_sequences=False, return_state=True)
      >>> last.shape, bool((last == state.h).all())
      ((4,), True)
    """
    state, hs = jaxlstm.layer(
      self.params,
      xs,
      initial_state,
      lengths=lengths,
      mask=mask,
      resets=resets,
      reverse=pick(reverse, self.reverse),
      time_major=pick(time_major, self.time_major),
      unroll=self.unroll,
      impl=self.impl,
      remat=self.remat,
    )
    return layer_output(
      state,
      hs,
      return_sequences=pick(return_sequences, self.return_sequences),
      return_state=pick(return_state, self.return_state),
    )


class Stack(_Shell):
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
      ``{state field: rate}``) and DropConnect on ``w_h``; their masks come
      from the call's ``key``.
    inference: disable dropout and the regularizers' masks (zoneout takes its
      expectation), as ``eqx.nn.Dropout``'s (and ``eqx.nn.inference_mode``)
      does; the call's ``inference`` argument takes precedence.
    dtype: parameter dtype.
    return_sequences: return the last layer's whole output sequence (the
      default); if ``False``, only its last valid output ``(*batch, F)``.
    return_state: also return every layer's final state, as ``(states, output)``.
    time_major: inputs are ``(T, *batch, I)`` instead of ``(*batch, T, I)``.
    unroll: ``lax.scan`` unroll factor; ``None`` lets the kernel choose.
    impl: ``"auto"`` or a kernel's name, for every layer (see :func:`jaxlstm.layer`).
    remat: checkpoint every ``remat`` steps in each layer.
    key: PRNG key that initializes the params, as :func:`jaxlstm.stack_init`;
      not needed with ``params``. Dropout takes its key at call time.
    params: existing functional params to wrap (see :meth:`from_params`).
    **cell_options: the cell's init options, for every layer, such as
      ``peephole`` for ``"lstm"`` or ``activation`` for ``"rnn"``; they are
      stored in the params.

  Raises:
    TypeError: an option the cell does not take.
    ValueError: ``params`` whose layout the arguments do not describe, or no
      ``key`` and no ``params``.

  Example:
    >>> model = jaxlstm.equinox.Stack(3, 4, num_layers=2, bidirectional=True, dropout=0.5, key=jax.random.key(0))
    >>> xs = jnp.ones((2, 5, 3))
    >>> model(xs, key=jax.random.key(1)).shape
    (2, 5, 8)
    >>> bool((model(xs, inference=True) == jaxlstm.stack(model.params, xs)[1]).all())
    True
  """

  params: tuple  # the stack_init tuple: one cell's params or a Bidirectional pair per layer
  dropout: float = eqx.field(static=True)
  input_dropout: float = eqx.field(static=True)
  recurrent_dropout: float = eqx.field(static=True)
  zoneout: Any = eqx.field(static=True)
  weight_drop: float = eqx.field(static=True)
  inference: bool  # a field, not static, so that eqx.nn.inference_mode can switch it
  merge: str = eqx.field(static=True)
  return_sequences: bool = eqx.field(static=True)
  return_state: bool = eqx.field(static=True)
  time_major: bool = eqx.field(static=True)
  unroll: int | bool | None = eqx.field(static=True)
  impl: str = eqx.field(static=True)
  remat: int | None = eqx.field(static=True)

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
    zoneout: Any = 0.0,
    weight_drop: float = 0.0,
    inference: bool = False,
    dtype: Any = jnp.float32,
    return_sequences: bool = True,
    return_state: bool = False,
    time_major: bool = False,
    unroll: int | bool | None = None,
    impl: str = "auto",
    remat: int | None = None,
    key: jax.Array | None = None,
    params: Any = None,
    **cell_options,
  ):
    options = dict(
      check_cell_options(get_cell(cell), cell_options), cell=cell, bidirectional=bidirectional, merge=merge, dtype=dtype
    )
    self.params = _init_or_check(
      "Stack",
      jaxlstm.stack_init,
      (input_size, hidden_size, num_layers),
      options,
      key,
      None if params is None else tuple(params),
    )
    self.dropout, self.inference, self.merge = dropout, inference, merge
    self.input_dropout, self.recurrent_dropout, self.weight_drop = input_dropout, recurrent_dropout, weight_drop
    # A static field must hash: a {field: rate} zoneout is kept as its sorted items.
    self.zoneout = tuple(sorted(dict(zoneout).items())) if isinstance(zoneout, Mapping) else zoneout
    self.return_sequences, self.return_state = return_sequences, return_state
    self.time_major, self.unroll, self.impl, self.remat = time_major, unroll, impl, remat

  @classmethod
  def from_params(cls, params: Any, *, merge: str = "concat", **settings) -> Stack:
    """Wraps the functional params of :func:`jaxlstm.stack_init`.

    The cell, the number of layers, the directions and the cell options come
    from the params.

    Args:
      params: the tuple of layer params.
      merge: the merge the params were built for (it fixes layer sizes).
      **settings: ``dropout``, ``inference`` and the call settings. A cell
        option may be restated, but not changed.

    Returns:
      A module whose ``params`` are ``params``.

    Raises:
      TypeError, ValueError: params that are not a stack built with
        ``merge``, or a setting that contradicts them.

    Example:
      >>> params = jaxlstm.stack_init(jax.random.key(0), 3, 4, 2, cell="rnn", activation="relu")
      >>> model = jaxlstm.equinox.Stack.from_params(params)
      >>> model.params[1].activation, model(jnp.ones((2, 5, 3))).shape
      ('relu', (2, 5, 4))
    """
    options = stack_options(params, merge)
    settings = restated(options, settings)
    return cls(options.pop("input_size"), options.pop("hidden_size"), merge=merge, params=params, **options, **settings)

  def __call__(
    self,
    xs: jax.Array,
    initial_states: Any = None,
    *,
    lengths: jax.Array | None = None,
    mask: jax.Array | None = None,
    resets: jax.Array | None = None,
    key: jax.Array | None = None,
    inference: bool | None = None,
    return_sequences: bool | None = None,
    return_state: bool | None = None,
    time_major: bool | None = None,
  ):
    """Runs the stack over a sequence.

    Args:
      xs: inputs ``(*batch, T, I)``, or ``(T, *batch, I)`` if time-major.
      initial_states: one state per layer (a :class:`jaxlstm.Bidirectional`
        pair for a bidirectional layer); zeros when ``None``.
      lengths: ``(*batch,)`` lengths, for every layer.
      mask: ``(*batch, T)`` validity flags, for every layer.
      resets: ``(*batch, T)`` segment starts, for every layer.
      key: PRNG key for this call's dropout masks; needed when dropout is on.
      inference: disable dropout for this call (overrides the field).
      return_sequences: override the module's setting for this call.
      return_state: override the module's setting for this call.
      time_major: override the module's setting for this call.

    Returns:
      The last layer's ``hs (*batch, T, F)``, or its last valid output
      ``(*batch, F)`` if not ``return_sequences``; with ``return_state``,
      ``(states, output)`` where ``states`` has one state per layer.

    Raises:
      ValueError: dropout is on and no ``key`` was given.

    Example:
      >>> model = jaxlstm.equinox.Stack(3, 4, num_layers=2, cell="gru", key=jax.random.key(0))
      >>> states, last = model(jnp.ones((2, 5, 3)), return_sequences=False, return_state=True)
      >>> len(states), last.shape
      (2, (2, 4))
    """
    options = SimpleNamespace(
      dropout=self.dropout,
      input_dropout=self.input_dropout,
      recurrent_dropout=self.recurrent_dropout,
      weight_drop=self.weight_drop,
      zoneout=dict(self.zoneout) if isinstance(self.zoneout, tuple) else self.zoneout,
    )
    drop = not pick(inference, self.inference) and needs_rng(options)
    if drop and key is None:
      raise ValueError(
        f"Stack with dropout={self.dropout} or regularizers needs key= in the call unless inference=True"
      )
    rates = regularizer_rates(options, drop)
    states, hs = jaxlstm.stack(
      self.params,
      xs,
      initial_states,
      lengths=lengths,
      mask=mask,
      resets=resets,
      dropout=self.dropout if drop else 0.0,
      key=key if drop else None,
      merge=self.merge,
      time_major=pick(time_major, self.time_major),
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


class Cell(_Shell):
  """One step of any registered cell, for hand-written loops: ``cell(state, x) -> (state, y)``.

  It runs the cell's registered ``step`` (e.g. :func:`jaxlstm.lstm_step`).
  The order is the scan body's, ``(state, x)``; ``eqx.nn.LSTMCell`` takes
  ``(input, hidden)`` and returns only the hidden state.

  Args:
    input_size: ``I``.
    hidden_size: ``H``.
    cell: the name of a registered cell: ``"lstm"``, ``"gru"``, ``"rnn"`` or
      one added with :func:`jaxlstm.register_cell`.
    dtype: parameter dtype.
    key: PRNG key that initializes the params; not needed with ``params``.
    params: existing functional params to wrap (see :meth:`from_params`).
    **cell_options: the cell's init options, stored in the params.

  Raises:
    TypeError: an option the cell does not take.
    ValueError: ``params`` whose layout the arguments do not describe, or no
      ``key`` and no ``params``.

  Example:
    >>> cell = jaxlstm.equinox.Cell(3, 4, cell="gru", key=jax.random.key(0))
    >>> # A lambda, since lax.scan hashes its body and a module holding arrays is not hashable.
    >>> state, ys = jax.lax.scan(lambda s, x: cell(s, x), cell.initial_state((2,)), jnp.ones((5, 2, 3)))
    >>> ys.shape, bool((ys[-1] == state.h).all())
    ((5, 2, 4), True)
  """

  params: Any  # one layer's functional params, e.g. GRUParams

  def __init__(
    self,
    input_size: int,
    hidden_size: int,
    *,
    cell: str = "lstm",
    dtype: Any = jnp.float32,
    key: jax.Array | None = None,
    params: Any = None,
    **cell_options,
  ):
    self.params = _one_cell(input_size, hidden_size, cell, dtype, cell_options, key, params, "Cell")

  @classmethod
  def from_params(cls, params: Any) -> Cell:
    """Wraps existing functional params of one layer; the cell and its options come from them.

    Args:
      params: one layer's params of a registered cell.

    Returns:
      A module whose ``params`` are ``params``.

    Raises:
      TypeError: ``params`` are not a registered cell's.

    Example:
      >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 4, peephole=True)
      >>> cell = jaxlstm.equinox.Cell.from_params(params)
      >>> cell.cell, cell.params.peephole.shape
      ('lstm', (3, 4))
    """
    return _from_one_cell(cls, params, {})

  def initial_state(self, batch_shape: tuple[int, ...] = ()) -> Any:
    """The all-zero state; see :func:`jaxlstm.zero_state`.

    Args:
      batch_shape: the leading batch axes of every state leaf.

    Returns:
      The cell's state (say :class:`jaxlstm.LSTMState`), leaves ``(*batch_shape, F)``.

    Example:
      >>> cell = jaxlstm.equinox.Cell(3, 4, proj_size=2, key=jax.random.key(0))
      >>> state = cell.initial_state((5,))
      >>> state.h.shape, state.c.shape
      ((5, 2), (5, 4))
    """
    return cell_of(self.params).zero_state(self.params, tuple(batch_shape))

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
      >>> cell = jaxlstm.equinox.Cell(3, 4, cell="rnn", activation="relu", key=jax.random.key(0))
      >>> state, y = cell(cell.initial_state(), jnp.ones(3))
      >>> y.shape, bool((y >= 0).all())
      ((4,), True)
    """
    params = self.params
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != params.input_size:
      raise ValueError(f"x must have shape (..., {params.input_size}); got {jnp.shape(x)}")
    return cell_of(params).step(params, state, x)
