"""Flax Linen modules (jaxlstm.linen): equal to the functional API on the same params.

As in test_nn.py (jaxlstm.nnx), module and functional calls share one ``jax.jit`` so
each test compiles about once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.errors import ScopeParamShapeError

import jaxlstm
from jaxlstm import linen as jl
from tests.helpers import assert_trees_close, assert_trees_equal, normal, random_params

B, T, I, H = 3, 5, 2, 3
LENGTHS = jnp.asarray([5, 2, 0])

# (module, cell module, functional layer, functional init, init options). The options go into the params, so the
# functional call takes none: an RNN's activation among them.
LAYERS = {
  "lstm": (jl.LSTM(H), jl.LSTMCell(H), jaxlstm.lstm, jaxlstm.lstm_init, {}),
  "lstm_peephole": (jl.LSTM(H, peephole=True), None, jaxlstm.lstm, jaxlstm.lstm_init, {"peephole": True}),
  "lstm_layer_norm": (jl.LSTM(H, layer_norm=True), None, jaxlstm.lstm, jaxlstm.lstm_init, {"layer_norm": True}),
  "lstm_proj": (
    jl.LSTM(H, proj_size=2),
    jl.LSTMCell(H, proj_size=2),
    jaxlstm.lstm,
    jaxlstm.lstm_init,
    {"proj_size": 2},
  ),
  "gru": (jl.GRU(H), jl.GRUCell(H), jaxlstm.gru, jaxlstm.gru_init, {}),
  "rnn_relu": (
    jl.RNN(H, activation="relu"),
    jl.RNNCell(H, activation="relu"),
    jaxlstm.rnn,
    jaxlstm.rnn_init,
    {"activation": "relu"},
  ),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_equals_functional(name):
  module, _, fn, init, options = LAYERS[name]
  params = random_params(init, I, H, **options)
  xs = normal((B, T, I))
  # init gives the functional layout, from the functional init.
  shapes = jax.eval_shape(module.init, jax.random.key(0), xs)
  assert jax.tree.map(lambda s: (s.shape, s.dtype), shapes) == jax.tree.map(
    lambda s: (s.shape, s.dtype), jl.to_variables(jax.eval_shape(lambda k: init(k, I, H, **options), jax.random.key(0)))
  )

  @jax.jit
  def run(variables, xs):
    p = jl.from_variables(variables)
    return (
      module.apply(variables, xs, lengths=LENGTHS),
      module.apply(variables, xs, lengths=LENGTHS, return_sequences=False, return_state=True),
      fn(p, xs, lengths=LENGTHS),
    )

  hs, (state, last), (expected_state, expected_hs) = run(jl.to_variables(params), xs)
  np.testing.assert_array_equal(hs, expected_hs)
  assert_trees_equal(state, expected_state)
  assert last.shape == (B, hs.shape[-1])
  np.testing.assert_array_equal(last, expected_state.h)
  np.testing.assert_array_equal(last[0], hs[0, -1])
  np.testing.assert_array_equal(last[1], hs[1, 1])


def test_param_layout_round_trip():
  params = random_params(jaxlstm.lstm_init, I, H, peephole=True, layer_norm=True, proj_size=2)
  module, variables = jl.LSTM.from_params(params)
  assert module == jl.LSTM(H, peephole=True, layer_norm=True, proj_size=2)
  assert variables == {"params": {"weights": params}}
  assert jl.from_variables(variables) is params
  stack_params = random_params(jaxlstm.stack_init, I, H, 2, cell="gru", bidirectional=True, merge="mean")
  stack, variables = jl.Stack.from_params(stack_params, merge="mean")
  assert stack == jl.Stack(H, num_layers=2, cell="gru", bidirectional=True, merge="mean")
  assert_trees_equal(jl.from_variables(variables), stack_params)
  cell, variables = jl.RNNCell.from_params(random_params(jaxlstm.rnn_init, I, H, activation="relu"))
  assert cell == jl.RNNCell(H, activation="relu")


def test_init_uses_the_module_rng():
  xs = normal((B, T, I))
  a = jl.from_variables(jl.LSTM(H).init(jax.random.key(0), xs))
  b = jl.from_variables(jl.LSTM(H).init(jax.random.key(0), xs))
  c = jl.from_variables(jl.LSTM(H).init(jax.random.key(1), xs))
  assert_trees_equal(a, b)
  assert not np.array_equal(a.w_x, c.w_x)
  np.testing.assert_array_equal(a.b[H : 2 * H], 1.0)  # lstm_init's forget bias


def test_apply_checks_variables_layout():
  params = random_params(jaxlstm.lstm_init, I, H)
  xs = normal((B, T, I))
  with pytest.raises(ValueError, match="layout"):
    jl.LSTM(H, peephole=True).apply(jl.to_variables(params), xs)
  with pytest.raises(ScopeParamShapeError, match=r"\(2, 16\)"):  # Flax's own shape check comes first
    jl.LSTM(4).apply(jl.to_variables(params), xs)
  with pytest.raises(TypeError, match="params must be GRUParams; got LSTMParams"):
    jl.GRU.from_params(params)


def test_stack_bidirectional_with_lengths():
  params = random_params(jaxlstm.stack_init, I, H, 2, bidirectional=True, peephole=True)
  model = jl.Stack(H, num_layers=2, bidirectional=True, peephole=True)

  @jax.jit
  def run(variables, xs):
    return (
      model.apply(variables, xs, lengths=LENGTHS),
      model.apply(variables, xs, lengths=LENGTHS, return_sequences=False, return_state=True),
      jaxlstm.stack(jl.from_variables(variables), xs, lengths=LENGTHS),
    )

  hs, (states, last), (expected_states, expected_hs) = run(jl.to_variables(params), normal((B, T, I)))
  np.testing.assert_array_equal(hs, expected_hs)
  assert_trees_equal(states, expected_states)
  assert last.shape == (B, 2 * H)
  np.testing.assert_array_equal(last, jnp.concatenate([states[-1].forward.h, states[-1].backward.h], -1))
  np.testing.assert_array_equal(last[0], jnp.concatenate([hs[0, -1, :H], hs[0, 0, H:]]))


def test_stack_dropout_and_grads():
  params = random_params(jaxlstm.stack_init, I, H, 2, cell="rnn")
  model = jl.Stack(H, num_layers=2, cell="rnn", dropout=0.5)
  xs = normal((B, T, I))

  def loss(variables, deterministic, key):
    return jnp.sum(model.apply(variables, xs, deterministic=deterministic, rngs={"dropout": key}) ** 2)

  @jax.jit
  def run(variables, key):
    return (
      model.apply(variables, xs, deterministic=True),
      model.apply(variables, xs, deterministic=False, rngs={"dropout": key}),
      jaxlstm.stack(jl.from_variables(variables), xs)[1],
      jax.grad(loss)(variables, True, key),
      jax.grad(lambda p: jnp.sum(jaxlstm.stack(p, xs)[1] ** 2))(jl.from_variables(variables)),
      jax.grad(loss)(variables, False, key),
    )

  deterministic, dropped, clean, grads, expected_grads, dropped_grads = run(jl.to_variables(params), jax.random.key(0))
  np.testing.assert_array_equal(deterministic, clean)
  assert not np.array_equal(dropped, clean)
  assert dropped.shape == clean.shape
  # Grads come back in the functional layout, equal to the functional grads.
  assert_trees_equal(jl.from_variables(grads), expected_grads)
  assert all(np.any(g != 0) for g in jax.tree.leaves(expected_grads))
  assert not np.array_equal(dropped_grads["params"]["weights"][0].w_x, grads["params"]["weights"][0].w_x)
  with pytest.raises(Exception, match="deterministic"):
    model.apply(jl.to_variables(params), xs)


@pytest.mark.parametrize("name", ["lstm_proj", "gru", "rnn_relu"])
def test_cells_in_a_python_loop(name):
  _, cell, fn, init, options = LAYERS[name]
  params = random_params(init, I, H, **options)
  xs = normal((B, T, I))
  state = cell.initial_state((B,))  # works unbound
  assert_trees_equal(state, jaxlstm.zero_state(params, (B,)))
  assert jax.tree.structure(jax.eval_shape(cell.init, jax.random.key(0), state, xs[:, 0])) == jax.tree.structure(
    jl.to_variables(params)
  )

  @jax.jit
  def run(variables, xs):
    s = state
    hs = []
    for t in range(T):
      s, h = cell.apply(variables, s, xs[:, t])
      hs.append(h)
    return s, jnp.stack(hs, axis=1), fn(jl.from_variables(variables), xs)

  final, hs, (expected_state, expected_hs) = run(jl.to_variables(params), xs)
  assert_trees_close(hs, expected_hs)
  assert_trees_close(final, expected_state)


def test_eager_apply_time_major():
  params = random_params(jaxlstm.gru_init, I, H)
  xs = normal((T, B, I))
  _, hs = jax.jit(lambda p, x: jaxlstm.gru(p, x, time_major=True, reverse=True))(params, xs)
  out = jl.GRU(H, time_major=True, reverse=True).apply(jl.to_variables(params), xs)
  np.testing.assert_allclose(out, hs, rtol=1e-6, atol=1e-7)


def test_relu_rnn_through_layer_stack_and_cell():
  # The activation lives in the params: no module and no functional call below is told it.
  params = random_params(jaxlstm.rnn_init, I, H, activation="relu")
  stack_params = (params, random_params(jaxlstm.rnn_init, H, H, activation="relu", seed=1))
  layer, variables = jl.Layer.from_params(params)
  stack, stack_variables = jl.Stack.from_params(stack_params)
  cell, _ = jl.Cell.from_params(params)
  assert layer == jl.Layer(H, cell="rnn", options={"activation": "relu"})
  assert stack == jl.Stack(H, num_layers=2, cell="rnn", options={"activation": "relu"})
  assert cell == jl.Cell(H, cell="rnn", options={"activation": "relu"})
  xs = normal((B, T, I))

  @jax.jit
  def run(v, sv, xs):
    p = jl.from_variables(v)
    state, ys = cell.initial_state((B,)), []
    for t in range(T):  # the loop oracle: the cell's own step, one call per step
      state, y = cell.apply(v, state, xs[:, t])
      ys.append(y)
    return (
      layer.apply(v, xs, lengths=LENGTHS),
      jaxlstm.rnn(p, xs, lengths=LENGTHS)[1],
      stack.apply(sv, xs),
      jaxlstm.stack(jl.from_variables(sv), xs)[1],
      jnp.stack(ys, axis=1),
      jaxlstm.rnn(p, xs)[1],
    )

  hs, expected_hs, stack_hs, expected_stack_hs, loop_hs, full_hs = run(variables, stack_variables, xs)
  np.testing.assert_array_equal(hs, expected_hs)
  np.testing.assert_array_equal(stack_hs, expected_stack_hs)
  assert_trees_close(loop_hs, full_hs)
  assert (full_hs >= 0).all() and (full_hs == 0).any()


def test_cell_options_go_into_the_params():
  xs = normal((B, T, I))
  key = jax.random.key(0)
  relu = random_params(jaxlstm.rnn_init, I, H, activation="relu")
  for module in (jl.RNN(H, activation="relu"), jl.Layer(H, cell="rnn", options={"activation": "relu"})):
    assert jl.from_variables(jax.eval_shape(module.init, key, xs)).activation == "relu"
  assert (
    jl.from_variables(
      jax.eval_shape(jl.RNNCell(H, activation="relu").init, key, jaxlstm.zero_state(relu, (B,)), xs[:, 0])
    ).activation
    == "relu"
  )
  stack = jax.eval_shape(jl.Stack(H, num_layers=2, cell="rnn", activation="relu").init, key, xs)
  assert [p.activation for p in jl.from_variables(stack)] == ["relu", "relu"]
  # A module whose attributes contradict its params raises, at from_params and at apply.
  with pytest.raises(ValueError, match="activation='tanh' conflicts with the params"):
    jl.RNN.from_params(relu, activation="tanh")
  assert jl.RNN.from_params(relu, activation="relu")[0] == jl.RNN(H, activation="relu")
  with pytest.raises(ValueError, match="built with activation='relu', but the module has activation='tanh'"):
    jl.RNN(H).apply(jl.to_variables(relu), xs)
  with pytest.raises(ValueError, match="activation='tanh' conflicts with options"):
    jl.Stack(H, cell="rnn", activation="tanh", options={"activation": "relu"}).init(key, xs)
  with pytest.raises(TypeError, match="'peephole' is not an option of the 'gru' cell"):
    jl.Layer(H, cell="gru", options={"peephole": True}).init(key, xs)
  with pytest.raises(TypeError, match="'activation' is not an option of the 'lstm' cell"):
    jl.Stack(H, activation="relu").init(key, xs)
  # Options are frozen, so that the module hashes (jit static arguments, Flax's caches).
  assert hash(jl.Layer(H, cell="rnn", options={"activation": "relu"})) == hash(
    jl.Layer(H, cell="rnn", options={"activation": "relu"})
  )
