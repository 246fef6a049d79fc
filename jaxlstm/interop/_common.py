"""Helpers shared by the converters: NumPy views of our params, and the checks.

Converters work in NumPy, not in ``jax.numpy``: NumPy runs the transposes,
slices and bias sums exactly (IEEE arithmetic, the same as the peers'), and it
compiles nothing. Arrays become ``jax.Array`` only at the end.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm._src.cells.lstm import LSTMParams
from jaxlstm._src.cells.registry import cell_of_type, is_cell_params
from jaxlstm._src.stack import Bidirectional


def gates(cls: type) -> int:
  """The number of gate blocks along the weights' output axis of a params type, from the cell registry."""
  return cell_of_type(cls).gates


def np_array(x: Any) -> np.ndarray:
  """A NumPy copy of an array, keeping its dtype (bfloat16 included)."""
  return np.array(x, copy=True)


def array_fields(params: Any) -> dict[str, np.ndarray]:
  """NumPy copies of one layer's array fields, by name; ``None`` fields and static fields (``activation``) left out."""
  static = getattr(type(params), "static_fields", ())
  return {f: np_array(v) for f, v in params._asdict().items() if v is not None and f not in static}


def check_activation(name: str, params: Any, peer_activation: str, peer: str, setting: str) -> None:
  """Refuses to write params into a peer that computes another activation.

  The activation is part of the model, like the weights: writing relu weights
  into a tanh module would give it another function without an error.
  """
  if params.activation != peer_activation:
    raise ValueError(
      f"{name}.activation is {params.activation!r} but {peer} has {setting}={peer_activation!r}; "
      f"build the peer with {setting}={params.activation!r} (weights trained with one activation do not "
      f"compute the same function with the other)"
    )


def to_jax(tree: Any) -> Any:
  """Turns the NumPy leaves of a params tuple into ``jax.Array``, keeping ``None`` and static fields."""
  return jax.tree.map(jnp.asarray, tree)


def check_cell_params(name: str, params: Any, cls: type, peer: str, *, allow_proj: bool = False) -> None:
  """Checks that ``params`` is a ``cls`` that ``peer`` can hold: no peepholes or layer norm."""
  if not isinstance(params, cls):
    got = type(params).__name__
    hint = (
      " (a stack tuple was given where one layer's params were expected)"
      if isinstance(params, (tuple, list)) and not (is_cell_params(params) or isinstance(params, Bidirectional))
      else ""
    )
    raise TypeError(f"{name} must be {cls.__name__} for this {peer}; got {got}{hint}")
  if isinstance(params, LSTMParams):
    if params.peephole is not None:
      raise ValueError(
        f"{name}.peephole must be None: {peer} has no peephole connections; "
        f"got an array of shape {tuple(params.peephole.shape)}"
      )
    if params.layer_norm is not None:
      raise ValueError(f"{name}.layer_norm must be None: {peer} has no layer normalization; got LayerNormParams")
    if params.w_proj is not None and not allow_proj:
      raise ValueError(
        f"{name}.w_proj must be None: {peer} has no output projection; "
        f"got an array of shape {tuple(params.w_proj.shape)}"
      )


def check_shape(name: str, value: np.ndarray, expected: tuple[int, ...], why: str = "") -> None:
  if tuple(value.shape) != tuple(expected):
    raise ValueError(f"{name} must have shape {tuple(expected)}{why}; got {tuple(value.shape)}")


def check_dtype(name: str, value: np.ndarray, expected: Any, peer: str) -> None:
  if np.dtype(value.dtype) != np.dtype(expected):
    raise TypeError(
      f"{name} has dtype {np.dtype(value.dtype)} but {peer} holds {np.dtype(expected)}; "
      f"cast one of them so that they match"
    )


def check_zero(name: str, value: np.ndarray, why: str) -> None:
  """Refuses a nonzero array that the peer has nowhere to store: never drop a bias silently."""
  if np.any(value != 0):
    raise ValueError(
      f"{name} must be all zeros because {why}; got max |{name.rsplit('.', 1)[-1]}| = "
      f"{float(np.max(np.abs(value.astype(np.float64)))):.3g}"
    )


def check_stack(name: str, params: Any, num_layers: int, peer: str) -> None:
  """Checks that ``params`` is a tuple with one entry per layer."""
  if is_cell_params(params) or isinstance(params, Bidirectional):
    raise TypeError(
      f"{name} must be a tuple of layer params (as from stack_init) for {peer}; got a single "
      f"{type(params).__name__} (wrap it in a tuple)"
    )
  if not isinstance(params, (tuple, list)):
    raise TypeError(
      f"{name} must be a tuple of layer params (as from stack_init) for {peer}; got {type(params).__name__}"
    )
  if len(params) != num_layers:
    raise ValueError(f"{name} must have {num_layers} layers to match {peer}; got {len(params)}")


def directions(name: str, layer: Any, bidirectional: bool, peer: str) -> list[tuple[str, Any]]:
  """``[(name, params), ...]``: one entry, or forward and backward for a bidirectional layer."""
  if bidirectional != isinstance(layer, Bidirectional):
    want = "a Bidirectional(forward, backward) pair" if bidirectional else "one direction's params"
    raise TypeError(
      f"{name} must be {want}, since {peer} is "
      f"{'' if bidirectional else 'not '}bidirectional; got {type(layer).__name__}"
    )
  if bidirectional:
    return [(f"{name}.forward", layer.forward), (f"{name}.backward", layer.backward)]
  return [(name, layer)]
