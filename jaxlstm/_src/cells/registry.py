"""The cell record and the registry: everything the library needs to know about a cell, in one place.

A cell is a :class:`Cell`, a NamedTuple of pure functions and metadata, in
the way optax's ``GradientTransformation`` is a NamedTuple of ``init`` and
``update``. The registry maps each cell's params type (and its name) to its
record; layers, stacks, the Flax modules, the command line, the converters
and checkpoints ask it instead of switching on types. Adding a cell is one
file that builds a :class:`Cell` plus one :func:`register_cell` call.

Settings that change a cell's maths but are not arrays (the Elman RNN's
``activation``) are *static fields* of its params: they live in the params'
pytree structure rather than in its leaves, so they travel with the model
through ``jit``, ``vmap``, optax, the Flax modules and checkpoints, and a
call cannot forget them. :func:`static_fields` declares them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax


class Cell(NamedTuple):
  """The record of one recurrent cell.

  Attributes:
    name: the cell's name in :func:`jaxlstm.stack_init`, the Flax modules and
      the command line, e.g. ``"lstm"``.
    params_type: the NamedTuple class of its params; the registry's key.
    state_type: the NamedTuple class of its state.
    init: ``init(key, input_size, hidden_size, *, dtype, **options) -> params``.
    step: ``step(params, state, x) -> (state, y)``, the scan body, with any
      leading batch axes on ``state`` and ``x``.
    zero_state: ``zero_state(params, batch_shape=(), dtype=None) -> state``. For a cell with
      ``feature_axes > 1``, ``batch_shape`` ends with the input's spatial axes, ``(*batch, *spatial)``,
      from which the state's own spatial axes follow (as Flax's ``initialize_carry`` takes the input's shape).
    options_of: ``options_of(params) -> dict``, the init options (dtype
      included) that give ``params``' layout: ``init(key, I, H,
      **options_of(params))`` has the same structure, shapes and dtypes.
    gates: gate blocks along the output axis of the weights (LSTM 4, GRU 3,
      RNN 1), as the converters need.
    options: names of ``init``'s keyword options besides ``dtype``.
    peers: the peer classes it maps to, e.g. ``{"torch": "LSTM"}``; for
      messages and converters.
    recurrence: ``None``, or a :class:`Recurrence` for a cell whose step is
      the diagonal linear recurrence ``h' = a * h + b`` with ``a, b``
      functions of the input alone (minGRU, minLSTM); the ``parallel``
      kernel runs such cells with an associative scan over time.
    feature_axes: how many trailing axes of one step's input ``x``, of its output and of each state
      leaf belong to one example rather than to the batch: 1 (``(..., I)``) for the vector cells,
      ``rank + 1`` (``(..., *spatial, C)``) for the ConvLSTMs. The layer shell, the entry checks and
      :func:`jaxlstm.stack` read it to find the time and batch axes.
    update: ``None``, or ``update(params, state, zx, zh) -> (state, y)``: the
      step from its two projections on, ``zx = x @ params.w_x`` and
      ``zh = state.h @ params.w_h`` (each ``(..., gates * H)``), for a cell
      whose step begins with them. Recurrent dropout with a mask per gate
      (Keras' semantics, :mod:`jaxlstm.regularizers`) needs it.

  Example:
    >>> cell = jaxlstm.get_cell("gru")
    >>> cell.params_type is jaxlstm.GRUParams, cell.gates, cell.peers["torch"]
    (True, 3, 'GRU')
    >>> params = cell.init(jax.random.key(0), 3, 5)
    >>> state, y = cell.step(params, cell.zero_state(params, (2,)), jnp.ones((2, 3)))
    >>> y.shape, cell.options_of(params)
    ((2, 5), {'dtype': dtype('float32')})

    :func:`register_cell` shows a cell built from scratch.
  """

  name: str
  params_type: type
  state_type: type
  init: Callable[..., Any]
  step: Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
  zero_state: Callable[..., Any]
  options_of: Callable[[Any], dict]
  gates: int
  options: tuple[str, ...] = ()
  peers: Mapping[str, str] = {}
  recurrence: Recurrence | None = None
  feature_axes: int = 1
  update: Callable[..., tuple[Any, jax.Array]] | None = None


class Recurrence(NamedTuple):
  """How a cell's step is the diagonal linear recurrence ``h' = a * h + b``, with ``a, b`` from the input alone.

  The ``parallel`` kernel reads it: ``project`` once for all ``T`` steps (one GEMM), then ``gates`` step by
  step (or block by block) inside its scan, so that ``a`` and ``b`` never exist for the whole sequence.
  Such a cell's state is one field, ``h``, which is also its output, and its ``step`` must compute
  ``a * h + b`` from the same two functions.

  Attributes:
    project: ``project(params, xs, dtype) -> k``: ``xs (..., I)`` to ``k (..., K)`` in ``dtype``; every
      read of the params' arrays happens here.
    gates: ``gates(params, k) -> (a, b)``, each ``(..., H)``, elementwise over the leading axes; it may read
      the params' static fields (``params.log_space``) but not their arrays, which the kernel does not
      pass to it.

  Example:
    >>> rec = jaxlstm.get_cell("mingru").recurrence
    >>> params = jaxlstm.mingru_init(jax.random.key(0), 3, 5)
    >>> k = rec.project(params, jnp.ones((7, 2, 3)), jnp.float32)
    >>> a, b = rec.gates(params, k)
    >>> k.shape, a.shape, b.shape
    ((7, 2, 10), (7, 2, 5), (7, 2, 5))
  """

  project: Callable[[Any, jax.Array, Any], jax.Array]
  gates: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]


_BY_TYPE: dict[type, Cell] = {}
_BY_NAME: dict[str, Cell] = {}


def register_cell(cell: Cell) -> Cell:
  """Adds ``cell`` to the registry, keyed by its params type and its name; returns it.

  Raises:
    TypeError: ``cell`` is not a :class:`Cell`.
    ValueError: another cell already has its name or params type.

  Example:
    A cell of one's own, ``h' = tanh(x W + h)``. Its params say their sizes and dtype, as the built-in
    cells' do; once registered, it runs through every layer, stack, Flax module and checkpoint.

    >>> class MinParams(NamedTuple):
    ...   w: jax.Array  # (I, H)
    ...   input_size = property(lambda self: self.w.shape[0])
    ...   hidden_size = output_size = property(lambda self: self.w.shape[1])
    ...   dtype = property(lambda self: self.w.dtype)
    >>> class MinState(NamedTuple):
    ...   h: jax.Array  # (..., H)
    >>> def min_init(key, input_size, hidden_size, *, dtype=jnp.float32):
    ...   return MinParams(jax.random.normal(key, (input_size, hidden_size), dtype))
    >>> def min_step(params, state, x):
    ...   h = jnp.tanh(x @ params.w + state.h)
    ...   return MinState(h), h
    >>> def min_zero_state(params, batch_shape=(), dtype=None):
    ...   return MinState(jnp.zeros((*batch_shape, params.hidden_size), dtype or params.dtype))
    >>> cell = jaxlstm.Cell(name="min", params_type=MinParams, state_type=MinState, init=min_init,
    ...                     step=min_step, zero_state=min_zero_state, options_of=lambda p: {"dtype": p.dtype},
    ...                     gates=1)
    >>> jaxlstm.register_cell(cell).name
    'min'
    >>> params = jaxlstm.stack_init(jax.random.key(0), 3, 5, 2, cell="min")
    >>> states, hs = jaxlstm.stack(params, jnp.ones((2, 7, 3)), lengths=jnp.array([7, 2]))
    >>> hs.shape, states[-1].h.shape
    ((2, 7, 5), (2, 5))
    >>> jaxlstm.unregister_cell("min") is cell
    True
  """
  if not isinstance(cell, Cell):
    raise TypeError(f"cell must be a jaxlstm.Cell record; got {type(cell).__name__}")
  for old, what, key in (
    (_BY_TYPE.get(cell.params_type), "params type", cell.params_type.__name__),
    (_BY_NAME.get(cell.name), "name", cell.name),
  ):
    if old is not None and old != cell:
      raise ValueError(f"a cell with {what} {key!r} is already registered ({old.name!r})")
  _BY_TYPE[cell.params_type] = cell
  _BY_NAME[cell.name] = cell
  return cell


def unregister_cell(name: str) -> Cell:
  """Removes the cell called ``name`` from the registry and returns its record (for plugins and tests).

  Raises:
    ValueError: no cell has that name.

  Example:
    >>> cell = jaxlstm.unregister_cell("convlstm2d")  # the last one registered, so the order stays
    >>> "convlstm2d" in jaxlstm.cell_names()
    False
    >>> jaxlstm.register_cell(cell) is cell
    True
  """
  cell = get_cell(name)
  del _BY_NAME[name], _BY_TYPE[cell.params_type]
  return cell


def cell_names() -> tuple[str, ...]:
  """The names of every registered cell, sorted.

  Example:
    >>> jaxlstm.cell_names()
    ('convlstm1d', 'convlstm2d', 'gru', 'lstm', 'mingru', 'minlstm', 'rnn', 'slstm')
  """
  return tuple(sorted(_BY_NAME))


def is_cell_params(params: Any) -> bool:
  """Whether ``params`` is one layer's params of a registered cell.

  Example:
    >>> from jaxlstm._src.cells import is_cell_params
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> is_cell_params(params), is_cell_params((params,))
    (True, False)
  """
  return type(params) in _BY_TYPE


def cell_of(params: Any, name: str = "params") -> Cell:
  """The record of the cell whose params ``params`` are.

  Raises:
    TypeError: naming ``name``, when ``params`` is not the params of a
      registered cell.

  Example:
    >>> from jaxlstm._src.cells import cell_of
    >>> params = jaxlstm.stack_init(jax.random.key(0), 3, 5, 1)
    >>> cell_of(params[0]).name
    'lstm'
    >>> cell_of(params)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    TypeError: params must be the params of a registered cell (...); got tuple (a stack's tuple was given ...)
  """
  cell = _BY_TYPE.get(type(params))
  if cell is None:
    kinds = ", ".join(c.params_type.__name__ for c in _BY_TYPE.values())
    hint = (
      " (a stack's tuple was given where one layer's params were expected)"
      if isinstance(params, (tuple, list)) and not hasattr(params, "_fields")
      else ""
    )
    raise TypeError(f"{name} must be the params of a registered cell ({kinds}); got {type(params).__name__}{hint}")
  return cell


def cell_of_type(params_type: type) -> Cell:
  """The record of the cell whose params type is ``params_type``.

  Raises:
    TypeError: no registered cell has that params type.

  Example:
    >>> from jaxlstm._src.cells.registry import cell_of_type
    >>> cell_of_type(jaxlstm.RNNParams).name
    'rnn'
  """
  cell = _BY_TYPE.get(params_type)
  if cell is None:
    raise TypeError(f"{getattr(params_type, '__name__', params_type)} is not the params type of a registered cell")
  return cell


def get_cell(name: str) -> Cell:
  """The registered cell called ``name``.

  Raises:
    ValueError: no cell has that name.

  Example:
    >>> jaxlstm.get_cell("lstm").options
    ('peephole', 'layer_norm', 'proj_size', 'forget_bias')
    >>> jaxlstm.get_cell("xlstm")
    Traceback (most recent call last):
    ValueError: cell must be one of ['convlstm1d', 'convlstm2d', 'gru', 'lstm', 'mingru', 'minlstm', 'rnn', 'slstm'];
      got 'xlstm'
  """
  try:
    return _BY_NAME[name]
  except (KeyError, TypeError):
    raise ValueError(f"cell must be one of {list(cell_names())}; got {name!r}") from None


def static_fields(*names: str) -> Callable[[type], type]:
  """Class decorator: registers a params NamedTuple as a pytree whose ``names`` fields are static.

  Static fields are kept in the pytree's structure (its aux data), not in its
  leaves: ``jax.tree.map``, ``jit``, ``grad`` and optax pass them through
  untouched, and two params that differ in one have different tree
  structures (so a checkpoint cannot be restored into the wrong one). Their
  values must be hashable. The other fields stay ordinary children, with
  their names as key paths.

  Example:
    >>> @jaxlstm.static_fields("activation")
    ... class MyParams(NamedTuple):
    ...   w: jax.Array
    ...   activation: str = "tanh"
    >>> jax.tree_util.tree_structure(MyParams(jnp.ones(2), "relu"))
    PyTreeDef(CustomNode(MyParams[('relu',)], [*]))
  """

  def register(cls: type) -> type:
    fields = cls._fields  # type: ignore[attr-defined]  # a NamedTuple class; type[NamedTuple] is not callable to mypy
    unknown = [n for n in names if n not in fields]
    if unknown:
      raise ValueError(f"{cls.__name__} has no fields {unknown}")
    children = tuple(f for f in fields if f not in names)
    keys = tuple(jax.tree_util.GetAttrKey(f) for f in children)

    def flatten_with_keys(p):
      return tuple(zip(keys, (getattr(p, f) for f in children))), tuple(getattr(p, n) for n in names)

    def flatten(p):
      return tuple(getattr(p, f) for f in children), tuple(getattr(p, n) for n in names)

    def unflatten(aux, leaves):
      return cls(**dict(zip(children, leaves)), **dict(zip(names, aux)))

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    cls.static_fields = tuple(names)  # type: ignore[attr-defined]  # the attribute this decorator adds
    return cls

  return register
