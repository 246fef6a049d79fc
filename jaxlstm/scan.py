"""Unrolling any cell over a sequence with ``lax.scan``, with lengths, masks and resets."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxlstm import _checks

Step = Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]


def _expand(flags: jax.Array, leaf: jax.Array) -> jax.Array:
  """Adds trailing axes so that ``(*batch,)`` flags broadcast against ``(*batch, F)``."""
  return flags.reshape(flags.shape + (1,) * (leaf.ndim - flags.ndim))


def _select(flags: jax.Array, on_true: Any, on_false: Any) -> Any:
  return jax.tree_util.tree_map(lambda a, b: jnp.where(_expand(flags, a), a, b), on_true, on_false)


def reverse_index(lengths: jax.Array | None, T: int, batch_shape: tuple[int, ...]) -> jax.Array | None:
  """Time index ``(T, *batch)`` that reverses each row within its own length.

  Row ``b`` maps step ``t < L_b`` to ``L_b - 1 - t`` and leaves the padding in
  place. The map is its own inverse. Returns ``None`` without lengths (a plain
  flip then does the job).
  """
  if lengths is None:
    return None
  t = lax.broadcasted_iota(jnp.int32, (T, *batch_shape), 0)
  L = jnp.clip(lengths, 0, T).astype(jnp.int32)
  return jnp.where(t < L, L - 1 - t, t)


def _reorder(x: jax.Array, idx: jax.Array | None) -> jax.Array:
  """Reverses time-major ``x`` along axis 0, per row when ``idx`` is given."""
  if idx is None:
    return jnp.flip(x, axis=0)
  return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - idx.ndim)), axis=0)


def scan(step: Step, params: Any, xs: jax.Array, state: Any, *, lengths: jax.Array | None = None,
         mask: jax.Array | None = None, resets: jax.Array | None = None, reverse: bool = False,
         time_major: bool = False, unroll: int | bool = 1) -> tuple[Any, jax.Array]:
  """Runs ``step(params, state, x) -> (state, y)`` over a sequence with ``lax.scan``.

  Every leaf of the state must have shape ``(*batch, F)``; ``y`` has shape
  ``(*batch, F_out)``.

  Missing data is handled by three optional arguments, all per batch row:

  * ``lengths`` ``(*batch,)`` int: right-padded sequences. Steps ``t >= L`` are
    padding: the state stays frozen, the output is zero, and the final state
    is the one after step ``L - 1`` (the initial state when ``L == 0``).
    Values are clipped to ``[0, T]``.
  * ``mask`` ``(*batch, T)`` bool: where ``False``, the step is skipped: the
    state carries over unchanged and the output is zero. Any pattern works,
    including gaps in the middle. ``lengths=L`` is exactly
    ``mask = arange(T) < L[..., None]``.
  * ``resets`` ``(*batch, T)`` bool: ``True`` marks the first step of a new
    segment (packed episodes). The state is set back to the initial ``state``
    argument before that step is computed; a reset on a masked step still
    resets. In reverse, the same flags apply: the backward pass resets after
    leaving a segment, that is before step ``t`` when ``resets[..., t + 1]``,
    so one ``resets`` array serves both directions of a bidirectional layer.

  With ``reverse=True`` the sequence is processed from its last step to its
  first and the outputs are returned in the original order. With ``lengths``,
  each row is reversed within its own length, so the backward pass starts at
  the row's last valid step, as a bidirectional layer needs.

  ``T = 0`` is allowed and gives the initial state and empty outputs
  ``(*batch, 0, F_out)``.

  Args:
    step: cell function ``step(params, state, x) -> (state, y)``.
    params: the cell's params, passed through to ``step``.
    xs: inputs ``(*batch, T, I)``, or ``(T, *batch, I)`` if ``time_major``.
    state: initial state, a pytree of ``(*batch, F)`` arrays.
    lengths: optional ``(*batch,)`` integer lengths.
    mask: optional ``(*batch, T)`` (``(T, *batch)`` if time-major) flags, ``True`` = valid.
    resets: optional flags of the same shape as ``mask``, ``True`` = reset before this step.
    reverse: run backwards in time.
    time_major: whether the time axis of ``xs``, ``mask`` and ``resets`` comes first.
    unroll: passed to ``lax.scan``.

  Returns:
    ``(final_state, ys)`` with ``ys`` of shape ``(*batch, T, F_out)``, or
    ``(T, *batch, F_out)`` if ``time_major``.
  """
  xs = _checks.as_array("xs", xs)
  if xs.ndim < 2:
    layout = "(T, *batch, I)" if time_major else "(*batch, T, I)"
    raise ValueError(f"xs must have shape {layout}; got shape {xs.shape} (rank {xs.ndim})")
  _checks.check_float("xs", xs)
  if time_major:
    T, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
  else:
    T, batch_shape = xs.shape[-2], tuple(xs.shape[:-2])
  lengths, mask, resets = _checks.check_missing_data(lengths, mask, resets, T, batch_shape, time_major=time_major)
  return _scan(step, params, xs, state, lengths, mask, resets, reverse, time_major, unroll)


def to_time_major(a: jax.Array | None, *, time_major: bool, feature_axis: bool) -> jax.Array | None:
  """Moves the time axis of a batch-major array to the front."""
  if a is None or time_major:
    return a
  return jnp.moveaxis(a, -2 if feature_axis else -1, 0)


def from_time_major(a: jax.Array, *, time_major: bool) -> jax.Array:
  return a if time_major else jnp.moveaxis(a, 0, -2)


def valid_steps(lengths: jax.Array | None, mask: jax.Array | None, T: int) -> jax.Array | None:
  """Time-major ``(T, *batch)`` validity from lengths and a time-major mask."""
  valid = mask
  if lengths is not None:
    t = lax.broadcasted_iota(jnp.int32, (T, *lengths.shape), 0)
    in_len = t < lengths.astype(jnp.int32)
    valid = in_len if valid is None else valid & in_len
  return valid


def reverse_resets(resets: jax.Array) -> jax.Array:
  """Turns time-major segment starts into the backward pass's reset points."""
  return jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])], axis=0)


def _scan(step, params, xs, state, lengths, mask, resets, reverse, time_major, unroll):
  """``scan`` after its checks; shared with the layer functions."""
  xs_t = to_time_major(xs, time_major=time_major, feature_axis=True)  # (T, *batch, I)
  T, batch_shape = xs_t.shape[0], tuple(xs_t.shape[1:-1])
  valid = valid_steps(lengths, to_time_major(mask, time_major=time_major, feature_axis=False), T)
  rs = to_time_major(resets, time_major=time_major, feature_axis=False)
  idx = None
  if reverse:
    if rs is not None:
      rs = reverse_resets(rs)
    idx = reverse_index(lengths, T, batch_shape)
    xs_t = _reorder(xs_t, idx)
    valid = None if valid is None else _reorder(valid, idx)
    rs = None if rs is None else _reorder(rs, idx)
  init = state

  def body(carry, inputs):
    x, v, r = inputs
    if r is not None:
      carry = _select(r, init, carry)
    new, y = step(params, carry, x)
    if v is not None:
      new = _select(v, new, carry)
      y = jnp.where(_expand(v, y), y, jnp.zeros_like(y))
    return new, y

  final, ys = lax.scan(body, state, (xs_t, valid, rs), unroll=unroll)
  if reverse:
    ys = _reorder(ys, idx)
  return final, from_time_major(ys, time_major=time_major)
