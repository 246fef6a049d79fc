"""The layer shell: the layout work around every kernel, written once.

Every layer call, whichever kernel runs it, goes through :func:`run`:

1. time to the front: ``(*batch, T, I)`` becomes ``(T, *batch, I)``;
2. all batch axes flattened into one, ``(T, B, I)``, state leaves ``(B, F)``;
3. ``lengths`` and ``mask`` joined into one validity array ``(T, B)``;
4. for a backward pass, each row reversed within its own length, and
   ``resets`` moved to the backward pass's reset points;
5. ``T = 0`` answered without running a kernel;

then the kernel's core runs (see :mod:`jaxlstm.kernels`), and the
outputs are zeroed at invalid steps, put back in time order, unflattened
and moved back to the caller's layout.

The arguments arrive checked (:func:`jaxlstm.layer` and :func:`jaxlstm.scan`
check them at the public entry points).

A cell's ``feature_axes`` (:class:`jaxlstm.Cell`) says how many trailing axes
of a step are its features: one, ``I``, for the vector cells, and
``(*spatial, C)`` for the convolutional ones, whose inputs are
``(*batch, T, *spatial, C)``. Everything above works on the axes before them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxlstm._src.cells.registry import cell_of, is_cell_params


def to_time_major(a: jax.Array | None, *, time_major: bool, feature_axes: int) -> jax.Array | None:
  """Moves the time axis of a batch-major array to the front.

  Args:
    a: ``(*batch, T, *F)`` with ``feature_axes`` trailing feature axes ``F`` (0 for flags); or ``None``.
    time_major: ``a`` is time-major already, and is returned as it is.
    feature_axes: how many trailing axes follow the time axis.

  Returns:
    ``(T, *batch, *F)``, or ``None``.

  Example:
    >>> from jaxlstm._src.shell import to_time_major
    >>> to_time_major(jnp.ones((2, 4, 7, 3)), time_major=False, feature_axes=1).shape
    (7, 2, 4, 3)
    >>> to_time_major(jnp.ones((2, 7), bool), time_major=False, feature_axes=0).shape
    (7, 2)
    >>> to_time_major(jnp.ones((2, 7, 8, 8, 3)), time_major=False, feature_axes=3).shape  # (B, T, H, W, C)
    (7, 2, 8, 8, 3)
  """
  if a is None or time_major:
    return a
  return jnp.moveaxis(a, -1 - feature_axes, 0)


def from_time_major(a: jax.Array, *, time_major: bool, feature_axes: int = 1) -> jax.Array:
  """Moves the time axis of ``(T, *batch, *F)`` back to where the caller has it, before the ``feature_axes``.

  Example:
    >>> from jaxlstm._src.shell import from_time_major
    >>> from_time_major(jnp.ones((7, 2, 4, 5)), time_major=False).shape
    (2, 4, 7, 5)
    >>> from_time_major(jnp.ones((7, 2, 8, 8, 5)), time_major=False, feature_axes=3).shape
    (2, 7, 8, 8, 5)
  """
  return a if time_major else jnp.moveaxis(a, 0, -1 - feature_axes)


def valid_steps(lengths: jax.Array | None, mask: jax.Array | None, T: int) -> jax.Array | None:
  """Time-major ``(T, *batch)`` validity from lengths and a time-major mask.

  Args:
    lengths: ``(*batch,)`` ints, or ``None``.
    mask: ``(T, *batch)`` bools, or ``None``.
    T: the number of steps.

  Returns:
    ``(T, *batch)`` bools, true where both say the step is valid; ``None`` when both are ``None``.

  Example:
    >>> from jaxlstm._src.shell import valid_steps
    >>> valid_steps(jnp.array([3, 1]), None, 4).T  # rows of the batch
    Array([[ True,  True,  True, False],
           [ True, False, False, False]], dtype=bool)
  """
  valid = mask
  if lengths is not None:
    t = lax.broadcasted_iota(jnp.int32, (T, *lengths.shape), 0)
    in_len = t < lengths.astype(jnp.int32)
    valid = in_len if valid is None else valid & in_len
  return valid


def reverse_index(lengths: jax.Array | None, T: int, batch_shape: tuple[int, ...]) -> jax.Array | None:
  """Time index ``(T, *batch)`` that reverses each row within its own length.

  Row ``b`` maps step ``t < L_b`` to ``L_b - 1 - t`` and leaves the padding in
  place. The map is its own inverse. Returns ``None`` without lengths (a plain
  flip then does the job).

  Example:
    >>> from jaxlstm._src.shell import reverse_index
    >>> reverse_index(jnp.array([3, 1]), 4, (2,)).T  # rows of the batch
    Array([[2, 1, 0, 3],
           [0, 1, 2, 3]], dtype=int32)
  """
  if lengths is None:
    return None
  t = lax.broadcasted_iota(jnp.int32, (T, *batch_shape), 0)
  L = jnp.clip(lengths, 0, T).astype(jnp.int32)
  return jnp.where(t < L, L - 1 - t, t)


def reorder(x: jax.Array, idx: jax.Array | None) -> jax.Array:
  """Reverses time-major ``x`` along axis 0, per row when ``idx`` (from :func:`reverse_index`) is given.

  Args:
    x: ``(T, *batch, ...)``.
    idx: ``(T, *batch)`` time index, or ``None`` for a plain flip.

  Returns:
    ``x`` reordered along time, same shape.

  Example:
    >>> from jaxlstm._src.shell import reorder, reverse_index
    >>> x = jnp.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])  # (T, B) = (3, 2)
    >>> reorder(x, None).T
    Array([[3., 2., 1.],
           [3., 2., 1.]], dtype=float32)
    >>> reorder(x, reverse_index(jnp.array([3, 2]), 3, (2,))).T
    Array([[3., 2., 1.],
           [2., 1., 3.]], dtype=float32)
  """
  if idx is None:
    return jnp.flip(x, axis=0)
  return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - idx.ndim)), axis=0)


def reverse_resets(resets: jax.Array) -> jax.Array:
  """Turns time-major segment starts into the backward pass's reset points (before ``t`` when ``t + 1`` starts).

  Example:
    >>> from jaxlstm._src.shell import reverse_resets
    >>> reverse_resets(jnp.array([True, False, True, False]))  # segments [0, 2) and [2, 4)
    Array([False,  True, False, False], dtype=bool)
  """
  return jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])], axis=0)


Core = Callable[..., tuple[Any, jax.Array]]


def run(
  core: Core,
  params: Any,
  xs: jax.Array,
  state: Any,
  *,
  lengths=None,
  mask=None,
  resets=None,
  reverse: bool = False,
  time_major: bool = False,
  unroll=None,
  remat=None,
  feature_axes: int | None = None,
) -> tuple[Any, jax.Array]:
  """Runs ``core`` (a kernel's ``run``) over a sequence in the caller's layout.

  Args:
    core: ``core(params, xs (T, B, I), state (B, ...), valid, resets, *,
      lengths, unroll, remat) -> (final_state, ys (T, B, ...))``.
    params: passed through to ``core``.
    xs: ``(*batch, T, I)``, or ``(T, *batch, I)`` if ``time_major``; ``I`` stands for the
      ``feature_axes`` trailing axes, ``(*spatial, C)`` for a convolutional cell.
    state: the initial state, leaves ``(*batch, F)`` (``F`` likewise any trailing axes).
    lengths: ``(*batch,)`` ints or ``None``.
    mask, resets: ``(*batch, T)`` (time-major ``(T, *batch)``) bools or ``None``.
    reverse: process from the last valid step of each row to the first.
    time_major: the layout of ``xs``, ``mask``, ``resets`` and the outputs.
    unroll, remat: passed through to ``core``.
    feature_axes: the trailing feature axes of ``xs`` and of the outputs; ``None`` asks the
      registry for the params' cell's, and takes 1 for params of no registered cell (the step
      of :func:`jaxlstm.scan`).

  Returns:
    ``(final_state, ys)``: ``ys`` ``(*batch, T, F_out)`` (time-major
    ``(T, *batch, F_out)``), zero at invalid steps, in the dtype ``core`` gives.

  Example:
    Any kernel's core runs in the caller's layout, here the reference kernel's with two batch axes:

    >>> from jaxlstm import kernels
    >>> from jaxlstm.kernels import shell
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> state = jaxlstm.zero_state(params, (2, 4))
    >>> final, ys = shell.run(kernels.reference.run, params, jnp.ones((2, 4, 7, 3)), state, reverse=True)
    >>> final.h.shape, ys.shape
    ((2, 4, 5), (2, 4, 7, 5))
  """
  if feature_axes is None:
    feature_axes = cell_of(params).feature_axes if is_cell_params(params) else 1
  k = feature_axes
  xs_t = to_time_major(xs, time_major=time_major, feature_axes=k)  # (T, *batch, *I)
  assert xs_t is not None  # None only for None
  T, batch_shape = xs_t.shape[0], tuple(xs_t.shape[1 : xs_t.ndim - k])
  B = math.prod(batch_shape)
  nb = len(batch_shape)
  flat_state = jax.tree.map(lambda a: a.reshape(B, *a.shape[nb:]), state)
  kw = dict(lengths=None, unroll=unroll, remat=remat)
  if T == 0:
    # No step runs: the initial state, and empty outputs of the shape one step would give.
    probe = jax.ShapeDtypeStruct((1, B, *xs_t.shape[xs_t.ndim - k :]), xs.dtype)
    ys = jax.eval_shape(lambda x: core(params, x, flat_state, None, None, **kw)[1], probe)
    return state, from_time_major(
      jnp.zeros((0, *batch_shape, *ys.shape[2:]), ys.dtype), time_major=time_major, feature_axes=k
    )
  valid = valid_steps(lengths, to_time_major(mask, time_major=time_major, feature_axes=0), T)
  rs = to_time_major(resets, time_major=time_major, feature_axes=0)
  idx = None
  if reverse:
    if rs is not None:
      rs = reverse_resets(rs)
    idx = reverse_index(lengths, T, batch_shape)
    xs_t = reorder(xs_t, idx)
    valid = None if valid is None else reorder(valid, idx)
    rs = None if rs is None else reorder(rs, idx)
  flat = lambda a: None if a is None else a.reshape(T, B, *a.shape[1 + nb :])  # noqa: E731
  if lengths is not None and mask is None:
    # Reversal within lengths keeps the valid steps a prefix, so the lengths still describe them.
    kw["lengths"] = jnp.clip(lengths.reshape(B).astype(jnp.int32), 0, T)
  flat_valid = flat(valid)  # (T, B) or None
  final, ys = core(params, flat(xs_t), flat_state, flat_valid, flat(rs), **kw)
  if flat_valid is not None:
    ys = jnp.where(flat_valid.reshape(T, B, *(1,) * (ys.ndim - 2)), ys, jnp.zeros_like(ys))
  ys = ys.reshape(T, *batch_shape, *ys.shape[2:])
  if reverse:
    ys = reorder(ys, idx)
  final = jax.tree.map(lambda f, s: f.reshape(s.shape), final, state)
  return final, from_time_major(ys, time_major=time_major, feature_axes=k)
