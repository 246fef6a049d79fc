"""Sequences: lax.scan against Python loops and the NumPy reference, with lengths, masks and resets."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxlstm
from tests import reference as ref
from tests.helpers import TOL, normal, random_params, rel_err

B, T, I, H = 3, 6, 2, 3

CELLS = {
  "lstm": (jaxlstm.lstm_init, {}, jaxlstm.lstm, ref.lstm_cell),
  "peephole": (jaxlstm.lstm_init, {"peephole": True}, jaxlstm.lstm, ref.lstm_cell),
  "ln_proj": (jaxlstm.lstm_init, {"layer_norm": True, "proj_size": 2}, jaxlstm.lstm, ref.lstm_cell),
  "gru": (jaxlstm.gru_init, {}, jaxlstm.gru, ref.gru_cell),
  "rnn_relu": (
    jaxlstm.rnn_init,
    {"activation": "relu"},
    jaxlstm.rnn,
    functools.partial(ref.rnn_cell, activation="relu"),
  ),
}


def setup(cell, dtype=jnp.float64, seed=0):
  init, opts, layer, ref_cell = CELLS[cell]
  params = random_params(init, I, H, dtype=dtype, seed=seed, **opts)
  xs = normal((B, T, I), dtype, seed=seed + 1)
  state0 = jax.tree_util.tree_map(
    lambda z: normal(z.shape, dtype, seed=seed + 2, scale=0.5), jaxlstm.zero_state(params, (B,), dtype)
  )
  return params, xs, state0, layer, ref_cell


def row_state(state, b):
  return tuple(np.asarray(s[b], np.float64) for s in state)


def check_against(params, xs, state0, ref_cell, final, hs, row_fn, tol):
  """Compares every row of (final, hs) with ``row_fn(b) -> (state, ys)`` from the reference."""
  p = ref.to_numpy(params)
  for b in range(xs.shape[0]):
    st, ys = row_fn(p, b)
    assert rel_err(hs[b], ys) <= tol, f"row {b} outputs"
    for got, want in zip(final, st):
      assert rel_err(got[b], want) <= tol, f"row {b} final state"


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_sequence_matches_reference(cell, dtype):
  params, xs, state0, layer, ref_cell = setup(cell, dtype)
  final, hs = jax.jit(layer)(params, xs, state0)
  assert hs.dtype == dtype
  xs64 = np.asarray(xs, np.float64)
  check_against(
    params,
    xs,
    state0,
    ref_cell,
    final,
    hs,
    lambda p, b: ref.run(ref_cell, p, xs64[b], row_state(state0, b)),
    TOL[jnp.dtype(dtype)],
  )


def test_scan_matches_python_loop():
  params, xs, state0, _, _ = setup("peephole", jnp.float32)
  final, hs = jaxlstm.lstm(params, xs, state0)
  state, outs = state0, []
  for t in range(T):
    state, h = jaxlstm.lstm_step(params, state, xs[:, t])
    outs.append(h)
  np.testing.assert_allclose(hs, jnp.stack(outs, axis=1), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(final.c, state.c, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_reverse_equals_flipped_input(cell):
  params, xs, state0, layer, _ = setup(cell)
  final_r, hs_r = layer(params, xs, state0, reverse=True)
  final_f, hs_f = layer(params, jnp.flip(xs, axis=1), state0)
  np.testing.assert_allclose(hs_r, jnp.flip(hs_f, axis=1), rtol=1e-12)
  for a, b in zip(final_r, final_f):
    np.testing.assert_allclose(a, b, rtol=1e-12)


LENGTHS = np.array([6, 2, 0])


@pytest.mark.parametrize("cell", ["peephole", "gru", "rnn_relu"])
@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_by_definition(cell, reverse):
  params, xs, state0, layer, ref_cell = setup(cell)
  final, hs = layer(params, xs, state0, lengths=jnp.asarray(LENGTHS), reverse=reverse)
  xs64 = np.asarray(xs, np.float64)

  def row(p, b):
    L = LENGTHS[b]
    seq = xs64[b, :L][::-1] if reverse else xs64[b, :L]
    st, ys = ref.run(ref_cell, p, seq, row_state(state0, b))
    ys = ys[::-1] if reverse else ys
    return st, np.concatenate([ys, np.zeros((T - L, ys.shape[-1]))])

  check_against(params, xs, state0, ref_cell, final, hs, row, 1e-6)


MASK = np.array([[1, 0, 1, 1, 0, 1], [0, 0, 1, 0, 1, 1], [1, 1, 1, 1, 1, 0]], bool)
RESETS = np.array([[0, 0, 1, 0, 0, 0], [1, 0, 0, 1, 0, 1], [0, 0, 0, 0, 0, 0]], bool)


@pytest.mark.parametrize("cell", ["peephole", "gru"])
def test_mask_by_definition(cell):
  params, xs, state0, layer, ref_cell = setup(cell)
  final, hs = layer(params, xs, state0, mask=jnp.asarray(MASK))
  xs64 = np.asarray(xs, np.float64)
  check_against(
    params,
    xs,
    state0,
    ref_cell,
    final,
    hs,
    lambda p, b: ref.run(ref_cell, p, xs64[b], row_state(state0, b), valid=MASK[b]),
    1e-6,
  )


def test_lengths_equal_prefix_mask():
  params, xs, state0, layer, _ = setup("lstm")
  a = layer(params, xs, state0, lengths=jnp.asarray(LENGTHS))
  b = layer(params, xs, state0, mask=jnp.arange(T)[None, :] < jnp.asarray(LENGTHS)[:, None])
  for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_resets_by_definition(cell):
  params, xs, state0, layer, ref_cell = setup(cell)
  final, hs = layer(params, xs, state0, resets=jnp.asarray(RESETS), mask=jnp.asarray(MASK))
  xs64 = np.asarray(xs, np.float64)
  check_against(
    params,
    xs,
    state0,
    ref_cell,
    final,
    hs,
    lambda p, b: ref.run(ref_cell, p, xs64[b], row_state(state0, b), valid=MASK[b], resets=RESETS[b]),
    1e-6,
  )


def test_reverse_resets_split_segments():
  """In reverse, each segment (a packed episode) is run backwards on its own."""
  params, xs, state0, layer, ref_cell = setup("lstm")
  final, hs = layer(params, xs, state0, resets=jnp.asarray(RESETS), reverse=True)
  xs64 = np.asarray(xs, np.float64)

  def row(p, b):
    starts = [0] + [t for t in range(1, T) if RESETS[b, t]] + [T]
    ys = np.zeros((T, H))
    for s, e in zip(starts[:-1], starts[1:]):
      st, y = ref.run(ref_cell, p, xs64[b, s:e][::-1], row_state(state0, b))
      ys[s:e] = y[::-1]
      if s == 0:
        first_state = st  # the backward pass ends in the first segment
    return first_state, ys

  check_against(params, xs, state0, ref_cell, final, hs, row, 1e-6)


def test_time_major_matches_batch_major():
  params, xs, state0, layer, _ = setup("gru")
  a_final, a_hs = layer(params, xs, state0, lengths=jnp.asarray(LENGTHS), mask=jnp.asarray(MASK), reverse=True)
  b_final, b_hs = layer(
    params,
    jnp.swapaxes(xs, 0, 1),
    state0,
    lengths=jnp.asarray(LENGTHS),
    mask=jnp.asarray(MASK.T),
    reverse=True,
    time_major=True,
  )
  np.testing.assert_allclose(a_hs, jnp.swapaxes(b_hs, 0, 1), rtol=1e-12)
  np.testing.assert_allclose(a_final.h, b_final.h, rtol=1e-12)


def test_jit_vmap_invariance():
  params, xs, state0, _, _ = setup("peephole", jnp.float32)
  kw = dict(lengths=jnp.asarray(LENGTHS), mask=jnp.asarray(MASK), resets=jnp.asarray(RESETS))
  eager = jaxlstm.lstm(params, xs, state0, **kw)
  jitted = jax.jit(jaxlstm.lstm)(params, xs, state0, **kw)

  def one(x, h, c, L, m, r):  # unbatched: xs (T, I), state (H,), lengths ()
    return jaxlstm.lstm(params, x, jaxlstm.LSTMState(h, c), lengths=L, mask=m, resets=r)

  vmapped = jax.vmap(one)(xs, state0.h, state0.c, kw["lengths"], kw["mask"], kw["resets"])
  for a, b, c in zip(
    jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted), jax.tree_util.tree_leaves(vmapped)
  ):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-6)


def test_batch_rows_are_independent():
  params, xs, state0, _, _ = setup("lstm", jnp.float32)
  _, hs = jaxlstm.lstm(params, xs, state0, lengths=jnp.asarray(LENGTHS))
  for b in range(B):
    _, hb = jaxlstm.lstm(
      params,
      xs[b : b + 1],
      jax.tree_util.tree_map(lambda s, b=b: s[b : b + 1], state0),
      lengths=jnp.asarray(LENGTHS[b : b + 1]),
    )
    np.testing.assert_allclose(hs[b], hb[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cell", ["peephole", "ln_proj", "gru", "rnn_relu"])
def test_check_grads_float64(cell):
  params, xs, state0, layer, _ = setup(cell)
  kw = dict(lengths=jnp.asarray(LENGTHS), mask=jnp.asarray(MASK), resets=jnp.asarray(RESETS))

  def loss(params, xs, state0):
    final, hs = layer(params, xs, state0, **kw)
    return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(s**2) for s in final)

  check_grads(jax.jit(loss), (params, xs, state0), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


def test_grad_jit_invariance():
  params, xs, state0, _, _ = setup("lstm", jnp.float32)
  loss = lambda p: jnp.sum(jaxlstm.lstm(p, xs, state0, mask=jnp.asarray(MASK))[1] ** 2)
  g1, g2 = jax.grad(loss)(params), jax.jit(jax.grad(loss))(params)
  for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_empty_sequence():
  params, _, state0, _, _ = setup("lstm")
  final, hs = jaxlstm.lstm(params, jnp.zeros((B, 0, I), jnp.float64), state0)
  assert hs.shape == (B, 0, H)
  np.testing.assert_array_equal(final.h, state0.h)
  np.testing.assert_array_equal(final.c, state0.c)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 3, 1), (2, 1, 1)])
def test_size_one(shape):
  b, t, h = shape
  params = random_params(jaxlstm.lstm_init, 1, h, dtype=jnp.float64, peephole=True)
  xs = normal((b, t, 1), jnp.float64)
  final, hs = jaxlstm.lstm(params, xs)
  p = ref.to_numpy(params)
  for r in range(b):
    st, ys = ref.run(ref.lstm_cell, p, np.asarray(xs[r]), (np.zeros(h), np.zeros(h)))
    assert rel_err(hs[r], ys) <= 1e-12 and rel_err(final.c[r], st[1]) <= 1e-12


def test_unbatched_and_multi_batch_axes():
  params = random_params(jaxlstm.gru_init, I, H)
  xs = normal((2, 2, T, I))
  final, hs = jaxlstm.gru(params, xs, lengths=jnp.asarray([[6, 1], [3, 0]]))
  assert hs.shape == (2, 2, T, H) and final.h.shape == (2, 2, H)
  f1, h1 = jaxlstm.gru(params, xs[1, 0, :3])
  np.testing.assert_allclose(hs[1, 0, :3], h1, rtol=1e-6)
  np.testing.assert_allclose(final.h[1, 0], f1.h, rtol=1e-6)
  np.testing.assert_array_equal(hs[1, 1], 0.0)


def test_generic_scan_takes_any_cell():
  def running_sum(params, state, x):
    s = state + params * x
    return s, 2.0 * s

  xs = normal((B, T, 1), jnp.float64)
  final, ys = jaxlstm.scan(
    running_sum, jnp.asarray(3.0, jnp.float64), xs, jnp.zeros((B, 1), jnp.float64), lengths=jnp.asarray(LENGTHS)
  )
  expected = 3.0 * np.cumsum(np.asarray(xs), axis=1)
  valid = np.arange(T)[None, :, None] < LENGTHS[:, None, None]
  np.testing.assert_allclose(ys, np.where(valid, 2.0 * expected, 0.0), rtol=1e-12)
  np.testing.assert_allclose(
    final[:, 0], [expected[b, max(L - 1, 0), 0] if L else 0.0 for b, L in enumerate(LENGTHS)], rtol=1e-12
  )


def test_unroll_is_exact():
  params, xs, state0, _, _ = setup("lstm")
  a = jaxlstm.lstm(params, xs, state0, unroll=1)
  b = jaxlstm.lstm(params, xs, state0, unroll=3)
  for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(u, v, rtol=1e-12)
