"""What the Flax shells (:mod:`jaxlstm.nnx` and :mod:`jaxlstm.linen`) share: plain functions, no Flax.

Both shells describe a module by a cell name and that cell's init options,
and learn everything else from the cell registry (:func:`jaxlstm.get_cell`):
how to init, step and zero a state, and
which options built a given set of params. Nothing here names a cell, so a
cell added with :func:`jaxlstm.register_cell` works in every module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax

from jaxlstm._src.cells.registry import Cell, cell_of, get_cell, is_cell_params
from jaxlstm._src.stack import Bidirectional, check_stack, merge_outputs


def pick(value: Any, default: Any) -> Any:
  """``value``, or ``default`` when ``value`` is ``None``: a call's setting over the module's."""
  return default if value is None else value


REGULARIZERS = ("input_dropout", "recurrent_dropout", "zoneout", "weight_drop")


def regularizer_rates(module: Any, training: bool) -> dict:
  """The :func:`jaxlstm.stack` regularizer options of a Flax module (its attributes of :data:`REGULARIZERS`).

  In training every rate applies; in evaluation the dropouts are off and zoneout stays, for the call to take
  its expectation (a call without a key).

  Example:
    >>> from types import SimpleNamespace
    >>> module = SimpleNamespace(input_dropout=0.1, recurrent_dropout=0.2, zoneout=0.3, weight_drop=0.0)
    >>> regularizer_rates(module, False)
    {'zoneout': 0.3}
  """
  if not training:
    return {"zoneout": module.zoneout}
  return {name: getattr(module, name) for name in REGULARIZERS}


def needs_rng(module: Any) -> bool:
  """Whether a training call of the module draws random masks: dropout between layers or any regularizer."""
  zoneout = module.zoneout
  zoned = any(zoneout.values()) if isinstance(zoneout, Mapping) else bool(zoneout)
  return bool(
    getattr(module, "dropout", 0.0) or module.input_dropout or module.recurrent_dropout or module.weight_drop or zoned
  )


def check_cell_options(cell: Cell, options: Mapping[str, Any]) -> dict:
  """Checks ``options`` against the cell's init options; returns them as a dict.

  Raises:
    TypeError: an option the cell's init does not take (``dtype`` is a
      setting of its own, never an option).

  Example:
    >>> check_cell_options(jaxlstm.get_cell("rnn"), {"activation": "relu"})
    {'activation': 'relu'}
    >>> check_cell_options(jaxlstm.get_cell("gru"), {"peephole": True})
    Traceback (most recent call last):
    TypeError: 'peephole' is not an option of the 'gru' cell; its options are []
  """
  unknown = [k for k in options if k not in cell.options]
  if unknown:
    raise TypeError(f"{unknown[0]!r} is not an option of the {cell.name!r} cell; its options are {list(cell.options)}")
  return dict(options)


def check_kind(params: Any, cell_name: str | None) -> Cell:
  """The record of ``params``' cell, which must be ``cell_name``'s when one is given.

  Raises:
    TypeError: ``params`` are not one layer's params of a registered cell, or
      of another cell than ``cell_name``.
  """
  if cell_name is not None:
    expected = get_cell(cell_name).params_type
    if type(params) is not expected:
      raise TypeError(f"params must be {expected.__name__}; got {type(params).__name__}")
  return cell_of(params)


def params_options(params: Any) -> dict:
  """The init options (``dtype`` included) that give one layer's ``params`` their layout."""
  return dict(cell_of(params).options_of(params))


def restated(options: Mapping[str, Any], given: dict) -> dict:
  """Removes from ``given`` the settings that restate ``options`` (taken from params); refuses the others.

  A module built from params takes its cell options from them; a keyword that
  repeats one is harmless, one that contradicts it would describe another
  model than the params hold.

  Returns:
    ``given`` without the keys of ``options``.

  Raises:
    ValueError: naming the first setting that conflicts with the params.

  Example:
    >>> restated({"activation": "relu"}, {"activation": "relu", "reverse": True})
    {'reverse': True}
  """
  for key in given.keys() & options.keys():
    if given[key] != options[key]:
      raise ValueError(
        f"{key}={given[key]!r} conflicts with the params, which were built with "
        f"{key}={options[key]!r}; a module takes its cell options from its params, so drop the "
        f"argument"
      )
  return {k: v for k, v in given.items() if k not in options}


def stack_options(params: Any, merge: str) -> dict:
  """The :func:`jaxlstm.stack_init` arguments that give a stack's layout, for ``from_params``.

  Returns:
    ``input_size``, ``hidden_size``, ``num_layers``, ``cell``,
    ``bidirectional`` and the first layer's init options (``dtype``
    included); the other layers must share them, which the module's layout
    check then confirms.

  Raises:
    TypeError, ValueError: as :func:`jaxlstm.stack` for params that are not a
      stack built with ``merge``.

  Example:
    >>> params = jaxlstm.stack_init(jax.random.key(0), 3, 4, 2, cell="rnn", activation="relu")
    >>> options = stack_options(params, "concat")
    >>> options["num_layers"], options["cell"], options["activation"]
    (2, 'rnn', 'relu')
  """
  check_stack(params, merge)
  first = params[0].forward if isinstance(params[0], Bidirectional) else params[0]
  return dict(
    input_size=first.input_size,
    hidden_size=first.hidden_size,
    num_layers=len(params),
    cell=cell_of(first).name,
    bidirectional=isinstance(params[0], Bidirectional),
    **params_options(first),
  )


def shape_params(init: Callable[..., Any], *args, **kwargs) -> Any:
  """The params of ``init(key, *args, **kwargs)`` as shapes, computing nothing."""
  return jax.eval_shape(lambda key: init(key, *args, **kwargs), jax.random.key(0))


def _option_conflict(params: Any, expected: Any) -> str | None:
  """Which cell option (say ``activation``) sets ``params`` apart from ``expected``, in words; else ``None``."""
  got = jax.tree.leaves(params, is_leaf=is_cell_params)
  want = jax.tree.leaves(expected, is_leaf=is_cell_params)
  if len(got) != len(want):
    return None
  for p, e in zip(got, want):
    if type(p) is not type(e) or not is_cell_params(p):
      continue
    cell = cell_of(p)
    have, need = cell.options_of(p), cell.options_of(e)
    for key in need:
      if have.get(key) != need[key]:
        return f"the params were built with {key}={have.get(key)!r}, but the module has {key}={need[key]!r}"
  return None


def check_layout(name: str, params: Any, expected: Any) -> None:
  """Checks that ``params`` has the structure, shapes and dtypes of ``expected`` (from :func:`shape_params`).

  Static fields (an RNN's ``activation``) are part of the structure, so params
  built with another activation than the module's are refused here.

  Raises:
    ValueError: naming the first difference.
  """
  got = jax.tree_util.tree_structure(params)
  want = jax.tree_util.tree_structure(expected)
  if got != want:  # type: ignore[operator]  # jaxlib's PyTreeDef has no stub for mypy
    why = _option_conflict(params, expected)
    detail = f": {why}" if why else f"; got {got}"
    raise ValueError(f"{name} must have the layout {want} that the module's options describe{detail}")
  for (path, p), e in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(expected)):
    if p.shape != e.shape or p.dtype != e.dtype:
      raise ValueError(
        f"{name}{jax.tree_util.keystr(path)} must have shape {e.shape} and dtype {e.dtype}; got {p.shape} {p.dtype}"
      )


def layer_output(
  state: Any, hs: jax.Array, *, return_sequences: bool, return_state: bool, merge: str = "concat"
) -> Any:
  """What a layer call returns, from the functional ``(state, hs)``.

  The last output is the final ``h`` (of both directions, merged, for a
  :class:`jaxlstm.Bidirectional` state), in the dtype of ``hs``: it honours
  ``lengths`` and ``mask``, as the last row of ``hs`` would not.

  Args:
    state: one layer's final state, or a :class:`jaxlstm.Bidirectional` pair.
    hs: the output sequence.
    return_sequences: return ``hs`` rather than the last output.
    return_state: return ``(state, output)``.
    merge: how a bidirectional layer joins its two directions.

  Returns:
    ``hs`` or the last output, or ``(state, that)`` with ``return_state``.

  Raises:
    TypeError: the last output is asked of a cell whose state has no ``h``.
  """
  if return_sequences:
    out = hs
  else:
    one = state.forward if isinstance(state, Bidirectional) else state
    if not hasattr(one, "h"):
      raise TypeError(
        f"return_sequences=False takes the last output from the state's h, but a "
        f"{type(one).__name__} has no h; use return_sequences=True"
      )
    if isinstance(state, Bidirectional):
      out = merge_outputs(state.forward.h, state.backward.h, merge).astype(hs.dtype)
    else:
      out = state.h.astype(hs.dtype)
  return (state, out) if return_state else out
