"""Argument checks for the public entry points.

Shapes and dtypes are static under ``jit``, so these run once at trace time, in
plain Python, and cost nothing in the compiled program. Each error names the
argument and says what was expected and what arrived.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_float(dtype) -> bool:
  return jnp.issubdtype(dtype, jnp.floating)


def check_float(name: str, x: Any) -> None:
  if not is_float(x.dtype):
    raise TypeError(f"{name} must be a floating-point array; got dtype {x.dtype}")


def check_bool_or_int(name: str, x: Any) -> None:
  dt = x.dtype
  if not (dt == jnp.bool_ or jnp.issubdtype(dt, jnp.integer)):
    raise TypeError(f"{name} must be a bool or integer array; got dtype {dt}")


def check_int(name: str, x: Any) -> None:
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise TypeError(f"{name} must be an integer array; got dtype {x.dtype}")


def check_positive_int(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive int; got {value!r}")


def as_array(name: str, x: Any) -> jax.Array:
  """Converts array-likes, so that lists and NumPy arrays work too."""
  if isinstance(x, (jax.Array, np.ndarray, np.generic)):
    return jnp.asarray(x)
  try:
    return jnp.asarray(x)
  except TypeError as e:
    raise TypeError(f"{name} must be an array; got {type(x).__name__}") from e


SPATIAL = {1: "W", 2: "H, W", 3: "D, H, W"}  # names of the spatial axes in the messages, by rank


def check_sequence(
  name: str, xs: jax.Array, input_size: int, *, time_major: bool, feature_axes: int = 1
) -> tuple[int, tuple[int, ...]]:
  """Checks ``xs`` and returns ``(T, batch_shape)``.

  ``feature_axes`` is the cell's (:class:`jaxlstm.Cell`): the trailing axes of one step's input, ``(I,)``
  for a vector cell, ``(*spatial, I)`` for a convolutional one.

  Example:
    >>> from jaxlstm._src.checks import check_sequence
    >>> check_sequence("xs", jnp.ones((2, 7, 8, 8, 3)), 3, time_major=False, feature_axes=3)
    (7, (2,))
    >>> check_sequence("xs", jnp.ones((2, 7, 3)), 3, time_major=False, feature_axes=3)
    Traceback (most recent call last):
    ValueError: xs must have shape (*batch, T, H, W, I) with I=3; got shape (2, 7, 3) (rank 3)
  """
  spatial = SPATIAL.get(feature_axes - 1, f"<{feature_axes - 1} spatial axes>") + ", " if feature_axes > 1 else ""
  layout = f"(T, *batch, {spatial}I)" if time_major else f"(*batch, T, {spatial}I)"
  if xs.ndim < 1 + feature_axes:
    raise ValueError(f"{name} must have shape {layout} with I={input_size}; got shape {xs.shape} (rank {xs.ndim})")
  if xs.shape[-1] != input_size:
    raise ValueError(
      f"{name} must have shape {layout} with I={input_size} (the params' input size); got shape {xs.shape}"
    )
  check_float(name, xs)
  if time_major:
    return xs.shape[0], tuple(xs.shape[1 : xs.ndim - feature_axes])
  return xs.shape[-1 - feature_axes], tuple(xs.shape[: xs.ndim - 1 - feature_axes])


def check_dtype_match(name: str, x: jax.Array, param_dtype) -> None:
  if x.dtype != param_dtype:
    raise TypeError(
      f"{name} has dtype {x.dtype} but the params have dtype {jnp.dtype(param_dtype)}; "
      f"cast one of them so that they match"
    )


def check_state(name: str, state: Any, expected: Any) -> None:
  """Checks that ``state`` has the structure, shapes and float dtypes of ``expected``."""
  exp_leaves, exp_tree = jax.tree_util.tree_flatten(expected)
  try:
    leaves = exp_tree.flatten_up_to(state)  # type: ignore[attr-defined]  # jaxlib's PyTreeDef has no stub for mypy
  except (ValueError, TypeError):
    raise ValueError(
      f"{name} must be a {type(expected).__name__} matching the params; got {type(state).__name__}"
    ) from None
  fields = getattr(expected, "_fields", None)
  for i, (leaf, exp) in enumerate(zip(leaves, exp_leaves)):
    field = f"{name}.{fields[i]}" if fields and len(fields) == len(exp_leaves) else f"{name}[{i}]"
    shape = getattr(leaf, "shape", None)
    if shape is None:
      raise TypeError(f"{field} must be an array; got {type(leaf).__name__}")
    if tuple(shape) != tuple(exp.shape):
      raise ValueError(f"{field} must have shape {tuple(exp.shape)}; got {tuple(shape)}")
    if not is_float(leaf.dtype):
      raise TypeError(f"{field} must be a floating-point array; got dtype {leaf.dtype}")


def check_lengths(lengths: Any, batch_shape: tuple[int, ...]) -> jax.Array:
  lengths = as_array("lengths", lengths)
  check_int("lengths", lengths)
  if tuple(lengths.shape) != batch_shape:
    raise ValueError(f"lengths must have shape {batch_shape} (the batch shape of xs); got {tuple(lengths.shape)}")
  return lengths


def check_flags(name: str, flags: Any, T: int, batch_shape: tuple[int, ...], *, time_major: bool) -> jax.Array:
  """Checks a per-step flag array (``mask`` or ``resets``) and returns it as bool."""
  flags = as_array(name, flags)
  check_bool_or_int(name, flags)
  expected = (T, *batch_shape) if time_major else (*batch_shape, T)
  if tuple(flags.shape) != expected:
    layout = "(T, *batch)" if time_major else "(*batch, T)"
    raise ValueError(
      f"{name} must have shape {layout} = {expected}, like xs without its feature axis; got {tuple(flags.shape)}"
    )
  return flags.astype(bool)


def check_missing_data(
  lengths: Any, mask: Any, resets: Any, T: int, batch_shape: tuple[int, ...], *, time_major: bool
) -> tuple[Any, Any, Any]:
  """Checks the optional ``lengths``, ``mask`` and ``resets`` of a sequence call; ``None`` passes through."""
  if lengths is not None:
    lengths = check_lengths(lengths, batch_shape)
  if mask is not None:
    mask = check_flags("mask", mask, T, batch_shape, time_major=time_major)
  if resets is not None:
    resets = check_flags("resets", resets, T, batch_shape, time_major=time_major)
  return lengths, mask, resets
