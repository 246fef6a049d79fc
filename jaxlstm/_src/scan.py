"""Unrolling any step function over a sequence with ``lax.scan``, with lengths, masks and resets."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from jaxlstm._src import checks, shell
from jaxlstm._src.kernels.reference import scan_core

Step = Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]


def scan(
  step: Step,
  params: Any,
  xs: jax.Array,
  state: Any,
  *,
  lengths: jax.Array | None = None,
  mask: jax.Array | None = None,
  resets: jax.Array | None = None,
  reverse: bool = False,
  time_major: bool = False,
  unroll: int | bool = 1,
  feature_axes: int = 1,
) -> tuple[Any, jax.Array]:
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
    feature_axes: how many trailing axes of ``xs`` (and of the outputs) a step takes: 1 for ``(..., I)``,
      ``rank + 1`` for a convolutional step such as :func:`jaxlstm.convlstm_step`, ``(..., *spatial, C)``.

  Returns:
    ``(final_state, ys)`` with ``ys`` of shape ``(*batch, T, F_out)``, or
    ``(T, *batch, F_out)`` if ``time_major``.

  Example:
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> state0 = jaxlstm.lstm_zero_state(params, (2,))
    >>> state, hs = jaxlstm.scan(jaxlstm.lstm_step, params, jnp.ones((2, 7, 3)), state0,
    ...                          lengths=jnp.array([7, 3]))
    >>> hs.shape, bool((hs[1, 3:] == 0).all())
    ((2, 7, 5), True)
  """
  xs = checks.as_array("xs", xs)
  checks.check_positive_int("feature_axes", feature_axes)
  if xs.ndim < 1 + feature_axes:
    layout = "(T, *batch, I)" if time_major else "(*batch, T, I)"
    extra = "" if feature_axes == 1 else f" with {feature_axes} trailing feature axes"
    raise ValueError(f"xs must have shape {layout}{extra}; got shape {xs.shape} (rank {xs.ndim})")
  checks.check_float("xs", xs)
  n = xs.ndim - feature_axes
  if time_major:
    T, batch_shape = xs.shape[0], tuple(xs.shape[1:n])
  else:
    T, batch_shape = xs.shape[n - 1], tuple(xs.shape[: n - 1])
  lengths, mask, resets = checks.check_missing_data(lengths, mask, resets, T, batch_shape, time_major=time_major)
  return shell.run(
    functools.partial(scan_core, step),
    params,
    xs,
    state,
    lengths=lengths,
    mask=mask,
    resets=resets,
    reverse=reverse,
    time_major=time_major,
    unroll=unroll,
    feature_axes=feature_axes,
  )
