"""The reference kernel: ``lax.scan`` over the cell's own step function.

It runs every registered cell with every option (``lengths``, ``mask``,
``resets``, reverse), and it is the oracle that the faster kernels are held
to in the tests. It differentiates and batches with JAX's own rules, so
``grad``, ``jvp``, ``vmap`` and ``hessian`` all work through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxlstm._src.cells.registry import cell_of
from jaxlstm._src.kernels.registry import Kernel, LayerCall


def _expand(flags: jax.Array, leaf: jax.Array) -> jax.Array:
  """Adds trailing axes so that ``(B,)`` flags broadcast against ``(B, ...)``."""
  return flags.reshape(flags.shape + (1,) * (leaf.ndim - flags.ndim))


def _select(flags: jax.Array, on_true: Any, on_false: Any) -> Any:
  return jax.tree.map(lambda a, b: jnp.where(_expand(flags, a), a, b), on_true, on_false)


def scan_core(
  step: Callable,
  params: Any,
  xs: jax.Array,
  state: Any,
  valid: jax.Array | None,
  resets: jax.Array | None,
  *,
  lengths=None,
  unroll=None,
  remat=None,
) -> tuple[Any, jax.Array]:
  """``step`` unrolled with ``lax.scan`` on time-major ``xs (T, B, I)``; the kernel contract.

  A reset step starts from the initial ``state``; an invalid step keeps the
  carry (its output is left for the shell to zero).

  Args:
    step: ``step(params, state, x) -> (state, y)``.
    params: passed through to ``step``.
    xs: inputs ``(T, B, I)``.
    state: the initial state, leaves ``(B, F)``.
    valid: ``(T, B)`` bools, or ``None``.
    resets: ``(T, B)`` bools, or ``None``.
    lengths, remat: unused.
    unroll: passed to ``lax.scan``; 1 when ``None``.

  Returns:
    ``(final_state, ys)`` with ``ys (T, B, F_out)``.

  Example:
    >>> from jaxlstm._src.kernels.reference import scan_core
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 5)
    >>> valid = jnp.array([[True, True], [True, False]])  # (T, B): row 1 skips step 1
    >>> state, ys = scan_core(jaxlstm.rnn_step, params, jnp.ones((2, 2, 3)), jaxlstm.zero_state(params, (2,)),
    ...                       valid, None)
    >>> bool((state.h[1] == ys[0, 1]).all())  # row 1 kept its state after step 0
    True
  """
  del lengths, remat  # validity arrives in ``valid``; remat is refused by why_not

  def body(carry, inputs):
    x, v, r = inputs
    if r is not None:
      carry = _select(r, state, carry)
    new, y = step(params, carry, x)
    if v is not None:
      new = _select(v, new, carry)
    return new, y

  return lax.scan(body, state, (xs, valid, resets), unroll=1 if unroll is None else unroll)


def why_not(call: LayerCall) -> str | None:
  """Why the reference kernel cannot run ``call`` (only with ``remat``), or ``None``.

  Example:
    >>> from jaxlstm.kernels import reference
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("gru"), params=params, lengths=True, mask=True,
    ...                          resets=True, reverse=True, time_major=True, remat=None)
    >>> reference.why_not(call) is None
    True
  """
  if call.remat is not None:
    return (
      "remat is implemented by the fused kernels (fused, fused_gru, fused_rnn); the reference kernel keeps every step"
    )
  return None


def run(params: Any, xs: jax.Array, state: Any, valid, resets, *, lengths=None, unroll=None, remat=None):
  """The kernel's core: :func:`scan_core` over the params' registered cell step.

  Example:
    >>> from jaxlstm.kernels import reference
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> resets = jnp.zeros((7, 2), bool).at[4].set(True)  # (T, B): both rows start again at step 4
    >>> state, ys = reference.run(params, jnp.ones((7, 2, 3)), jaxlstm.zero_state(params, (2,)), None, resets)
    >>> ys.shape, bool(jnp.allclose(ys[4], ys[0]))
    ((7, 2, 5), True)
  """
  return scan_core(cell_of(params).step, params, xs, state, valid, resets, lengths=lengths, unroll=unroll, remat=remat)


KERNEL = Kernel(name="reference", why_not=why_not, run=run, rank=100, scans_step=True)
