r"""Linear recurrences with a hand-written transpose: how the fused kernels get both fast modes of autodiff.

A fused kernel's layer is a :func:`jax.custom_jvp`. Its tangent is the
linearized recurrence: with every step's activation derivatives saved by the
forward loop, the tangent of the carry obeys a recurrence that is *linear* in
the tangents, for example for the LSTM

.. code-block:: text

  dz_t = a_t + dh_{t-1} @ W_h               a_t: the hoisted input and weight tangents (big GEMMs)
  dc_t = F_t * dc_{t-1} + P_t * dz_t[ifg]   (P, Q, F: the saved factors)
  dh_t = Q_t * dc_t + P_t * dz_t[o]

Forward mode (``jvp``, ``jacfwd``) runs that recurrence. Reverse mode
(``grad``) is JAX's transpose of the tangent: the GEMMs that build ``a``
transpose into the GEMM-shaped weight gradients, and the recurrence itself,
which JAX could transpose only as a generic scan, transposes through the rule
given here into the kernel's hand-written backward loop (in-place, two small
fusions and a GEMM per step). So one definition serves ``jvp``, ``grad``,
``jacfwd``, ``jacrev``, ``hessian`` and ``vmap``, and reverse mode costs what
a hand-written :func:`jax.custom_vjp` costs.

:func:`linear_recurrence` turns such a pair of functions into two JAX
primitives, each the other's transpose:

* ``apply(coefs, lins, **static) -> outs``, linear in the pytree ``lins``;
* ``transpose(coefs, cts, **static) -> lins_ct``, its exact transpose.

``coefs`` (weights, saved factors, validity) enter nonlinearly: a tangent
reaching them (second-order autodiff) goes through :func:`jax.jvp` of the
plain function. ``rows`` names each leaf's batch axis, so that :func:`jax.vmap`
folds a mapped axis into the batch instead of mapping the loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core
from jax.interpreters import ad, batching, mlir


def _is_float(x) -> bool:
  return jnp.issubdtype(x.dtype, jnp.inexact)


class _Pair:
  """The two primitives of one linear recurrence and its transpose."""

  def __init__(self, name: str, apply: Callable, transpose: Callable):
    self.fns = (apply, transpose)
    self.prims = (core.Primitive(name), core.Primitive(name + "_transpose"))
    for which, p in enumerate(self.prims):
      p.multiple_results = True
      p.def_impl(functools.partial(self._impl, which))
      p.def_abstract_eval(functools.partial(self._abstract, which))
      mlir.register_lowering(p, mlir.lower_fun(functools.partial(self._flat, which), multiple_results=True))
      ad.primitive_jvps[p] = functools.partial(self._jvp, which)
      ad.primitive_transposes[p] = functools.partial(self._transpose, which)
      batching.primitive_batchers[p] = functools.partial(self._batch, which)

  # -- the plain function on flat leaves ------------------------------------------------------------------------

  def _flat(self, which, *leaves, coef_tree, lin_tree, out_tree, rows, static):
    del out_tree, rows
    n = coef_tree.num_leaves
    coefs = jax.tree.unflatten(coef_tree, leaves[:n])
    lins = jax.tree.unflatten(lin_tree, leaves[n:])
    return jax.tree.leaves(self.fns[which](coefs, lins, **dict(static)))

  def _impl(self, which, *leaves, **params):
    return jax.jit(functools.partial(self._flat, which, **params))(*leaves)

  def _abstract(self, which, *avals, **params):
    shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]
    outs = jax.eval_shape(functools.partial(self._flat, which, **params), *shapes)
    return [jax.core.ShapedArray(o.shape, o.dtype) for o in outs]

  def bind(self, which, coefs, lins, rows, static):
    """``apply`` (``which=0``) or ``transpose`` (1) as a primitive; returns its output pytree."""
    coef_leaves, coef_tree = jax.tree.flatten(coefs)
    lin_leaves, lin_tree = jax.tree.flatten(lins)
    fn = functools.partial(self.fns[which], **dict(static))
    out_tree = jax.tree.structure(jax.eval_shape(fn, coefs, lins))
    outs = self.prims[which].bind(
      *coef_leaves, *lin_leaves, coef_tree=coef_tree, lin_tree=lin_tree, out_tree=out_tree, rows=rows, static=static
    )
    return jax.tree.unflatten(out_tree, outs)

  # -- autodiff ---------------------------------------------------------------------------------------------------

  def _jvp(self, which, primals, tangents, *, coef_tree, lin_tree, out_tree, rows, static):
    n = coef_tree.num_leaves
    params = dict(coef_tree=coef_tree, lin_tree=lin_tree, out_tree=out_tree, rows=rows, static=static)
    p = self.prims[which]
    outs = p.bind(*primals, **params)
    lin_t = [ad.instantiate_zeros(t) for t in tangents[n:]]
    # Linear in lins: their tangent goes through the primitive itself.
    out_t = p.bind(*primals[:n], *lin_t, **params)
    # A tangent reaching the coefficients (second-order autodiff) goes through the plain function's jvp.
    moving = [i for i in range(n) if not isinstance(tangents[i], ad.Zero) and _is_float(primals[i])]
    if moving:

      def of_coefs(*moved):
        leaves = list(primals)
        for i, m in zip(moving, moved):
          leaves[i] = m
        return self._flat(which, *leaves, **params)

      _, extra = jax.jvp(of_coefs, [primals[i] for i in moving], [tangents[i] for i in moving])
      out_t = [a + b for a, b in zip(out_t, extra)]
    return outs, out_t

  def _transpose(self, which, cts, *leaves, coef_tree, lin_tree, out_tree, rows, static):
    n = coef_tree.num_leaves
    if any(ad.is_undefined_primal(x) for x in leaves[:n]):
      raise NotImplementedError("a linear recurrence is linear in its tangents only, not in its coefficients")
    coefs = jax.tree.unflatten(coef_tree, leaves[:n])
    cts = [ad.instantiate_zeros(ct) for ct in cts]
    coef_rows, lin_rows, out_rows = rows
    lin_ct = self.bind(1 - which, coefs, jax.tree.unflatten(out_tree, cts), (coef_rows, out_rows, lin_rows), static)
    return [None] * n + jax.tree.leaves(lin_ct)

  # -- vmap -------------------------------------------------------------------------------------------------------

  def _batch(self, which, args, dims, *, coef_tree, lin_tree, out_tree, rows, static):
    params = dict(coef_tree=coef_tree, lin_tree=lin_tree, out_tree=out_tree, rows=rows, static=static)
    coef_rows, lin_rows, out_rows = rows
    in_rows = (*coef_rows, *lin_rows)
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    if any(r is None and d is not None for r, d in zip(in_rows, dims)):
      # A mapped shared leaf (per-example weights): map the plain function.
      outs = jax.vmap(functools.partial(self._flat, which, **params), in_axes=dims)(*args)
      return outs, [0] * len(outs)
    # Fold the mapped axis into each leaf's batch axis, run once on the wider batch, and unfold.
    folded = []
    for a, d, r in zip(args, dims, in_rows):
      if r is None:
        folded.append(a)
        continue
      a = jnp.broadcast_to(a[None], (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
      a = jnp.moveaxis(a, 0, r)  # (..., size, B, ...)
      folded.append(a.reshape(*a.shape[:r], size * a.shape[r + 1], *a.shape[r + 2 :]))
    outs = self.prims[which].bind(*folded, **params)
    unfolded = []
    for o, r in zip(outs, out_rows):
      unfolded.append(o.reshape(*o.shape[:r], size, o.shape[r] // size, *o.shape[r + 1 :]))
    return unfolded, list(out_rows)


def linear_recurrence(name: str, apply: Callable, transpose: Callable) -> Callable:
  """``call(coefs, lins, *, rows, **static)``: ``apply`` as a primitive whose transpose is ``transpose``.

  Args:
    name: the primitive's name (shows in jaxprs).
    apply: ``apply(coefs, lins, **static) -> outs``, linear in ``lins``.
    transpose: ``transpose(coefs, outs_ct, **static) -> lins_ct``, the transpose of ``apply`` in ``lins``.

  Returns:
    ``call(coefs, lins, *, rows, **static) -> outs``. ``rows`` is a triple of
    tuples, one entry per leaf of ``coefs``, ``lins`` and ``outs`` in
    flattening order: the index of the leaf's batch axis, or ``None`` for a
    leaf shared by the batch (weights). ``static`` must be hashable.

  Example:
    A running sum, ``y_t = y_{t-1} + x_t``, and its transpose, the reversed running sum:

    >>> from jaxlstm._src.kernels.linear import linear_recurrence
    >>> apply = lambda coefs, xs: jnp.cumsum(xs * coefs, axis=0)
    >>> transpose = lambda coefs, ct: jnp.cumsum(ct[::-1], axis=0)[::-1] * coefs
    >>> cumsum = linear_recurrence("doc_cumsum", apply, transpose)
    >>> f = lambda w, x: cumsum(w, x, rows=((None,), (1,), (1,))).sum()
    >>> w, x = jnp.float32(2.0), jnp.ones((3, 2))
    >>> jax.grad(f, argnums=1)(w, x)
    Array([[6., 6.],
           [4., 4.],
           [2., 2.]], dtype=float32)
    >>> float(jax.grad(f)(w, x))  # the coefficient, through the plain function
    12.0
  """
  pair = _Pair(name, apply, transpose)

  def call(coefs: Any, lins: Any, *, rows: tuple, **static) -> Any:
    return pair.bind(0, coefs, lins, rows, tuple(sorted(static.items())))

  call.pair = pair  # type: ignore[attr-defined]
  return call


def reference_jvp(fast: Callable, reference: Callable) -> Callable:
  """``fast``, whose derivatives are those of ``reference``, a function that computes the same thing.

  For a kernel call whose own autodiff rules JAX lacks or cannot transform further (a ``pallas_call``'s jvp
  under ``vmap``, as second-order autodiff needs), with an XLA formulation of the same mathematics as its
  reference. The values always come from ``fast``; only tangents go through ``reference``.

  Example:
    >>> from jaxlstm._src.kernels.linear import reference_jvp
    >>> f = reference_jvp(lambda x: jnp.exp(x), lambda x: jnp.exp(x))
    >>> float(jax.grad(jax.grad(f))(0.0))
    1.0
  """
  f = jax.custom_jvp(fast)

  @f.defjvp
  def _(primals, tangents):
    return fast(*primals), jax.jvp(reference, primals, tangents)[1]

  return f


__all__ = ["linear_recurrence", "reference_jvp"]
