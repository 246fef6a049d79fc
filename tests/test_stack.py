"""Stacks: composition of layers, bidirectional merges, dropout, states."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from tests.helpers import normal, random_params

B, T, I, H = 3, 5, 2, 3
LENGTHS = jnp.asarray([5, 2, 0])


def stack_params(num_layers, **kw):
  return random_params(jaxlstm.stack_init, I, H, num_layers, **kw)


def test_stack_is_composition_of_layers():
  params = stack_params(2, peephole=True)
  xs = normal((B, T, I))
  states, hs = jaxlstm.stack(params, xs, lengths=LENGTHS)
  s0, h0 = jaxlstm.lstm(params[0], xs, lengths=LENGTHS)
  s1, h1 = jaxlstm.lstm(params[1], h0, lengths=LENGTHS)
  np.testing.assert_array_equal(hs, h1)
  np.testing.assert_array_equal(states[0].c, s0.c)
  np.testing.assert_array_equal(states[1].h, s1.h)


@pytest.mark.parametrize("merge", ["concat", "sum", "mean", "mul"])
def test_bidirectional_merges(merge):
  params = stack_params(2, cell="gru", bidirectional=True, merge=merge)
  xs = normal((B, T, I))
  states, hs = jaxlstm.stack(params, xs, lengths=LENGTHS, merge=merge)
  fw0 = jaxlstm.gru(params[0].forward, xs, lengths=LENGTHS)
  bw0 = jaxlstm.gru(params[0].backward, xs, lengths=LENGTHS, reverse=True)
  merged = {
    "concat": lambda a, b: jnp.concatenate([a, b], -1),
    "sum": jnp.add,
    "mean": lambda a, b: (a + b) / 2,
    "mul": jnp.multiply,
  }[merge]
  h0 = merged(fw0[1], bw0[1])
  fw1 = jaxlstm.gru(params[1].forward, h0, lengths=LENGTHS)
  bw1 = jaxlstm.gru(params[1].backward, h0, lengths=LENGTHS, reverse=True)
  np.testing.assert_allclose(hs, merged(fw1[1], bw1[1]), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(states[0].backward.h, bw0[0].h, rtol=1e-6)
  assert hs.shape == (B, T, 2 * H if merge == "concat" else H)
  # Padding stays zero through merges and layers.
  np.testing.assert_array_equal(hs[1, 2:], 0.0)


def test_bidirectional_backward_starts_at_each_rows_last_step():
  params = stack_params(1, bidirectional=True)
  xs = normal((B, T, I))
  _, hs = jaxlstm.stack(params, xs, lengths=LENGTHS)
  # Row 1 has length 2: its backward output at t=1 sees only x[1]; padding after it is ignored.
  _, solo = jaxlstm.lstm(params[0].backward, xs[1:2, 1:2])
  np.testing.assert_allclose(hs[1, 1, H:], solo[0, 0], rtol=1e-6)


def test_stack_initial_states_and_projection():
  params = stack_params(2, proj_size=2)
  xs = normal((B, T, I))
  states0 = tuple(
    jax.tree_util.tree_map(lambda z: normal(z.shape, seed=7), jaxlstm.zero_state(p, (B,))) for p in params
  )
  states, hs = jaxlstm.stack(params, xs, states0)
  _, h0 = jaxlstm.lstm(params[0], xs, states0[0])
  s1, h1 = jaxlstm.lstm(params[1], h0, states0[1])
  np.testing.assert_array_equal(hs, h1)
  assert hs.shape == (B, T, 2) and states[1].c.shape == (B, H) and states[1].h.shape == (B, 2)


def test_rnn_stack_activation():
  params = stack_params(2, cell="rnn", activation="relu")
  xs = normal((B, T, I))
  _, hs = jaxlstm.stack(params, xs, activation="relu")
  # The activation travels with the params: the stack computes relu without being told.
  np.testing.assert_array_equal(jaxlstm.stack(params, xs)[1], hs)
  with pytest.raises(
    ValueError,
    match=r"activation='tanh' conflicts with the params, which were built with "
    r"activation='relu'",
  ):
    jaxlstm.stack(params, xs, activation="tanh")
  _, h0 = jaxlstm.rnn(params[0], xs, activation="relu")
  _, h1 = jaxlstm.rnn(params[1], h0, activation="relu")
  np.testing.assert_array_equal(hs, h1)
  assert float(jnp.min(hs)) >= 0.0


def test_dropout_between_layers_only():
  params = stack_params(2)
  xs = normal((B, T, I))
  key = jax.random.key(3)
  plain_states, plain = jaxlstm.stack(params, xs)
  states_a, a = jaxlstm.stack(params, xs, dropout=0.5, key=key)
  _, b = jaxlstm.stack(params, xs, dropout=0.5, key=key)
  _, c = jaxlstm.stack(params, xs, dropout=0.5, key=jax.random.key(4))
  np.testing.assert_array_equal(a, b)  # same key, same mask
  assert not np.allclose(a, c) and not np.allclose(a, plain)
  # The first layer sees no dropout; its state is unchanged.
  np.testing.assert_array_equal(states_a[0].h, plain_states[0].h)
  # No dropout after the last layer: a one-layer stack ignores it.
  _, one = jaxlstm.stack(params[:1], xs, dropout=0.5, key=key)
  np.testing.assert_array_equal(one, jaxlstm.stack(params[:1], xs)[1])


def test_dropout_rate_and_scaling():
  # Layer 2 is an identity RNN (w_x = I, w_h = 0, b = 0) under relu, so its
  # output is the dropped-out output of layer 1: about a quarter of the
  # positive values become zero, and the rest are scaled by 1 / (1 - 0.25).
  params = random_params(jaxlstm.stack_init, I, 64, 2, cell="rnn", activation="relu")
  xs = normal((8, 4, I))
  ident = jaxlstm.RNNParams(
    jnp.eye(64, dtype=jnp.float32), jnp.zeros((64, 64), jnp.float32), jnp.zeros((64,), jnp.float32), activation="relu"
  )
  _, out = jaxlstm.stack((params[0], ident), xs, dropout=0.25, key=jax.random.key(0), activation="relu")
  _, first = jaxlstm.stack((params[0],), xs, activation="relu")
  kept = np.asarray(first) > 1e-6
  ratio = np.asarray(out)[kept] / np.asarray(first)[kept]
  dropped = np.isclose(ratio, 0.0)
  assert 0.15 < dropped.mean() < 0.35
  np.testing.assert_allclose(ratio[~dropped], 1 / 0.75, rtol=1e-5)


def test_stack_under_jit_and_grad():
  params = stack_params(2, bidirectional=True)
  xs = normal((B, T, I))

  def loss(p, key):
    _, hs = jaxlstm.stack(p, xs, lengths=LENGTHS, dropout=0.1, key=key)
    return jnp.mean(hs**2)

  g = jax.jit(jax.grad(loss))(params, jax.random.key(0))
  assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(params)
  assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(g))
  assert float(jnp.abs(g[0].backward.w_x).sum()) > 0


def test_stack_init_shapes():
  params = jaxlstm.stack_init(jax.random.key(0), 10, 8, 3, bidirectional=True)
  assert [p.forward.w_x.shape for p in params] == [(10, 32), (16, 32), (16, 32)]
  params = jaxlstm.stack_init(jax.random.key(0), 10, 8, 2, bidirectional=True, merge="sum", cell="gru")
  assert [p.backward.w_x.shape for p in params] == [(10, 24), (8, 24)]
  params = jaxlstm.stack_init(jax.random.key(0), 10, 8, 2, proj_size=3, forget_bias=0.0)
  assert [p.w_x.shape for p in params] == [(10, 32), (3, 32)]
  np.testing.assert_array_equal(params[0].b, 0.0)
