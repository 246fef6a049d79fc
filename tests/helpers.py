"""Shared test helpers. Random data comes from NumPy, which compiles nothing."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxlstm


def random_params(init, *args, seed=0, scale=0.5, **kwargs):
  """Params with the structure of ``init(key, *args, **kwargs)``, filled with N(0, scale²).

  ``jax.eval_shape`` traces the init without compiling it, and random values
  everywhere keep init patterns (zero biases, unit gains) from hiding bugs.
  """
  shapes = jax.eval_shape(lambda k: init(k, *args, **kwargs), jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes)


def normal(shape, dtype=jnp.float32, seed=0, scale=1.0):
  return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), dtype)


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise AssertionError(f"shape {a.shape} != {b.shape}")
  if a.size == 0:
    return 0.0
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


TOL = {jnp.dtype(jnp.float32): 1e-5, jnp.dtype(jnp.float64): 1e-6}


def assert_trees_equal(a, b):
  """Same pytree structure and bitwise-equal leaves."""
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def assert_trees_close(a, b):
  """Same pytree structure and leaves equal to float32 rounding."""
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)


def assert_trees_rel_close(got, want, tol):
  """Same pytree structure and shapes, each leaf within ``tol`` of ``want``'s relative to its largest entry
  (:func:`rel_err`); a failure names the leaf's path."""
  leaves_got, tree_got = jax.tree_util.tree_flatten_with_path(got)
  leaves_want, tree_want = jax.tree_util.tree_flatten(want)
  assert tree_got == tree_want
  for (path, a), b in zip(leaves_got, leaves_want):
    assert a.shape == b.shape, jax.tree_util.keystr(path)
    assert rel_err(a, b) <= tol, f"{jax.tree_util.keystr(path)}: {rel_err(a, b)}"


def as_float32(tree):
  """Every leaf cast to float32."""
  return jax.tree.map(lambda a: a.astype(jnp.float32), tree)


def loss_and_grads(impl, params, xs, state, **kw):
  """``((final, hs), grads)`` of ``jaxlstm.layer`` on ``impl``: the outputs, the final state and the gradients
  w.r.t. params, xs and state of a loss that weighs ``hs`` and every leaf of the final state, jitted."""

  def loss(params, xs, state):
    final, hs = jaxlstm.layer(params, xs, state, impl=impl, **kw)
    out = (hs, *jax.tree.leaves(final))
    ws = [jnp.asarray(np.random.default_rng(10 + k).standard_normal(a.shape), a.dtype) for k, a in enumerate(out)]
    return sum(jnp.sum(a * w) for a, w in zip(out, ws)), (final, hs)

  grads, (final, hs) = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(params, xs, state)
  return (final, hs), grads


def check_against_reference(impl, params, xs, state, tol, **kw):
  """:func:`loss_and_grads` on ``impl`` with float64 ``params, xs, state`` cast to float32, held to the float64
  reference kernel's on the same values within ``tol`` (relative to each array's largest entry)."""
  got = loss_and_grads(impl, *as_float32((params, xs, state)), **kw)
  want = loss_and_grads("reference", params, xs, state, **kw)
  assert_trees_rel_close(got, want, tol)


def forward_modes(f, x, t):
  """``(jax.jvp(f, (x,), (t,)), jax.jacfwd(f)(x), jax.hessian(sum of f)(x))``, jitted: forward mode's three
  entry points on one function, to hold a kernel's against the reference kernel's."""
  return jax.jit(lambda x: (jax.jvp(f, (x,), (t,)), jax.jacfwd(f)(x), jax.hessian(lambda y: f(y).sum())(x)))(x)


@contextlib.contextmanager
def native_settings(native, *, threads=0, panels=1):
  """The native library's task count (``native.set_threads``) and per-step GEMM (``native.set_panels``) for the
  calls inside the block, restored to the defaults after it."""
  native.set_threads(threads)
  native.set_panels(panels)
  try:
    yield
  finally:
    native.set_threads(0)
    native.set_panels(1)
