"""A Python-loop unroll with the same contract as the layer functions: the oracle of every kernel.

It shares no code with :mod:`jaxlstm.kernels.shell` or the kernels: each row of the
batch is unrolled on its own, one step at a time, with the documented
semantics of ``lengths``, ``mask``, ``resets`` and ``reverse`` written out
directly (as Haiku's ``static_unroll`` is to ``dynamic_unroll``).
"""

import jax
import jax.numpy as jnp
import numpy as np


def python_unroll(step, params, xs, state, *, lengths=None, mask=None, resets=None, reverse=False, time_major=False):
  """``(final_state, ys)`` of ``step`` over ``xs (*batch, T, I)``, in a Python loop over rows and steps.

  A step is valid where ``mask`` is True and ``t < lengths``; an invalid step
  keeps the state and outputs zeros. ``resets[t]`` sets the state back to the
  initial state before step ``t`` (in reverse: before ``t`` when
  ``resets[t + 1]``). ``reverse`` runs each row from its last valid step
  (``lengths - 1``) down to 0, then over its padding.
  """
  if time_major:
    xs = jnp.moveaxis(xs, 0, -2)
    mask = None if mask is None else np.moveaxis(np.asarray(mask), 0, -1)
    resets = None if resets is None else np.moveaxis(np.asarray(resets), 0, -1)
  T, batch = xs.shape[-2], xs.shape[:-2]
  rows = []
  finals = []
  for b in np.ndindex(*batch):
    s0 = jax.tree.map(lambda a, b=b: a[b], state)
    L = T if lengths is None else int(np.clip(np.asarray(lengths)[b], 0, T))
    valid = [t < L and (mask is None or bool(np.asarray(mask)[b][t])) for t in range(T)]
    seg = [False] * T if resets is None else [bool(v) for v in np.asarray(resets)[b]]
    order = list(range(L - 1, -1, -1)) + list(range(L, T)) if reverse else list(range(T))
    s, ys = s0, [None] * T
    for t in order:
      if (seg[t + 1] if t + 1 < T else False) if reverse else seg[t]:
        s = s0
      if valid[t]:
        s, y = step(params, s, xs[b][t])
        ys[t] = y
    y_shape = jax.eval_shape(lambda st, x: step(params, st, x)[1], s0, xs[b][0])
    ys = [jnp.zeros(y_shape.shape, y_shape.dtype) if y is None else y for y in ys]
    rows.append(jnp.stack(ys) if T else jnp.zeros((0, *y_shape.shape), y_shape.dtype))
    finals.append(s)
  ys = jnp.stack(rows).reshape(*batch, T, *rows[0].shape[1:])
  final = jax.tree.map(lambda *leaves: jnp.stack(leaves).reshape(*batch, *leaves[0].shape), *finals)
  if time_major:
    ys = jnp.moveaxis(ys, -2, 0)
  return final, ys
