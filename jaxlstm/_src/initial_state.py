"""A learnable initial state: trainable params shaped as one example's state, broadcast to the batch.

The initial state is a params pytree with the structure of the states that
:func:`jaxlstm.layer` and :func:`jaxlstm.stack` take, less the batch axes: one
cell state per layer, a :class:`jaxlstm.Bidirectional` pair of them per
bidirectional layer, each leaf ``(F,)``. Train it with the rest of the params
and pass ``broadcast_state(h0, batch_shape)`` as ``state=`` or ``states=``.
The scan's ``resets`` go back to the state argument, so a learned initial
state is also what a packed sequence's segments start from.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxlstm._src.cells.registry import is_cell_params
from jaxlstm._src.layers import batch_shape_of, check_params, zero_state
from jaxlstm._src.stack import Bidirectional, check_stack


def initial_state_init(params: Any, *, dtype: DTypeLike | None = None) -> Any:
  """Trainable initial-state params for one layer or a stack, initialized to the cell's zero state.

  Args:
    params: one layer's params (any registered cell), or a stack's tuple from
      :func:`jaxlstm.stack_init`.
    dtype: the state's dtype; the cell's own state dtype (float32 for 16-bit
      params) when ``None``, which is what the layer's carry uses.

  Returns:
    For one layer, its cell's state record with leaves ``(F,)`` (no batch
    axes); for a stack, a tuple of them, one per layer, and a
    :class:`jaxlstm.Bidirectional` pair for a bidirectional layer. All zeros,
    so a fresh model computes what it computed before.

  Raises:
    TypeError: ``params`` are neither one layer's params nor a stack's tuple.

  Example:
    >>> params = jaxlstm.stack_init(jax.random.key(0), 3, 5, 2, bidirectional=True)
    >>> h0 = jaxlstm.initial_state_init(params)
    >>> len(h0), h0[0].forward.h.shape, h0[1].backward.c.shape
    (2, (5,), (5,))
    >>> jaxlstm.initial_state_init(jaxlstm.gru_init(jax.random.key(0), 3, 4)).h.shape
    (4,)
  """
  if is_cell_params(params):
    check_params("params", params)
    return zero_state(params, (), dtype)
  check_stack(params, None)

  def one(layer):
    if isinstance(layer, Bidirectional):
      return Bidirectional(zero_state(layer.forward, (), dtype), zero_state(layer.backward, (), dtype))
    return zero_state(layer, (), dtype)

  return tuple(one(layer) for layer in params)


def broadcast_state(state: Any, batch_shape: tuple[int, ...]) -> Any:
  """Repeats an initial state without batch axes over ``batch_shape``; the gradient sums over the batch.

  Args:
    state: a pytree of arrays, such as :func:`initial_state_init`'s, each leaf
      one example's ``(*F)``.
    batch_shape: the leading batch axes to add, e.g. ``(B,)``.

  Returns:
    ``state`` with every leaf ``(*batch_shape, *F)``: the ``state=`` of
    :func:`jaxlstm.layer`, or the ``states=`` of :func:`jaxlstm.stack` for a
    stack's tuple.

  Raises:
    ValueError: ``batch_shape`` is not a tuple of non-negative ints.

  Example:
    >>> params = jaxlstm.stack_init(jax.random.key(0), 3, 5, 2)
    >>> h0 = jaxlstm.initial_state_init(params)
    >>> states = jaxlstm.broadcast_state(h0, (4,))
    >>> states[0].h.shape
    (4, 5)
    >>> loss = lambda h0: jaxlstm.stack(params, jnp.ones((4, 7, 3)), jaxlstm.broadcast_state(h0, (4,)))[1].sum()
    >>> grads = jax.grad(loss)(h0)  # summed over the 4 rows
    >>> grads[0].h.shape, bool(jnp.abs(grads[0].h).sum() > 0)
    ((5,), True)
  """
  try:
    batch_shape = tuple(int(d) for d in batch_shape)
  except TypeError:
    raise ValueError(f"batch_shape must be a tuple of ints; got {batch_shape!r}") from None
  if any(d < 0 for d in batch_shape):
    raise ValueError(f"batch_shape must be a tuple of non-negative ints; got {batch_shape!r}")
  return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, batch_shape + jnp.shape(a)), state)


def given_or_initial(state: Any, h0: Any, xs: jax.Array, *, time_major: bool) -> Any:
  """The state a module's call starts from: the one given, else ``h0`` broadcast to the batch of ``xs``.

  ``h0`` is ``None`` for a module without a learned initial state; the call then starts from zeros.

  Example:
    >>> from jaxlstm._src.initial_state import given_or_initial
    >>> h0 = jaxlstm.initial_state_init(jaxlstm.gru_init(jax.random.key(0), 3, 4))
    >>> given_or_initial(None, h0, jnp.ones((2, 5, 3)), time_major=False).h.shape
    (2, 4)
    >>> given_or_initial(None, None, jnp.ones((2, 5, 3)), time_major=False) is None
    True
  """
  if state is not None or h0 is None:
    return state
  return broadcast_state(h0, batch_shape_of(xs, time_major=time_major))
