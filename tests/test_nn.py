"""Flax NNX modules (jaxlstm.nnx): equal to the functional API on the same params.

Each comparison runs the module and the functional API in one ``jax.jit``: an
eager ``lax.scan`` compiles afresh on every call, so this keeps the number of
compilations, which dominate the run time, to about one per test.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm
import jaxlstm.nnx as jnn
from tests.helpers import assert_trees_close, assert_trees_equal, normal, random_params

B, T, I, H = 3, 5, 2, 3
LENGTHS = jnp.asarray([5, 2, 0])

# (module class, cell class, functional layer, functional init, init options). The options go into the params,
# so neither the module nor the functional call takes any: an RNN's activation among them.
LAYERS = {
  "lstm": (jnn.LSTM, jnn.LSTMCell, jaxlstm.lstm, jaxlstm.lstm_init, {}),
  "lstm_peephole": (jnn.LSTM, jnn.LSTMCell, jaxlstm.lstm, jaxlstm.lstm_init, {"peephole": True}),
  "lstm_layer_norm": (jnn.LSTM, jnn.LSTMCell, jaxlstm.lstm, jaxlstm.lstm_init, {"layer_norm": True}),
  "lstm_proj": (jnn.LSTM, jnn.LSTMCell, jaxlstm.lstm, jaxlstm.lstm_init, {"proj_size": 2}),
  "gru": (jnn.GRU, jnn.GRUCell, jaxlstm.gru, jaxlstm.gru_init, {}),
  "rnn_relu": (jnn.RNN, jnn.RNNCell, jaxlstm.rnn, jaxlstm.rnn_init, {"activation": "relu"}),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_equals_functional(name):
  cls, _, fn, init, options = LAYERS[name]
  params = random_params(init, I, H, **options)
  assert_trees_equal(cls.from_params(params).params, params)  # functional -> module -> functional

  @jax.jit
  def run(p, xs):
    layer = cls.from_params(p)
    return (
      layer(xs, lengths=LENGTHS),
      layer(xs, lengths=LENGTHS, return_sequences=False, return_state=True),
      fn(p, xs, lengths=LENGTHS),
    )

  hs, (state, last), (expected_state, expected_hs) = run(params, normal((B, T, I)))
  np.testing.assert_array_equal(hs, expected_hs)
  assert_trees_equal(state, expected_state)
  # The last output is the final h: the last step of a full row, the last valid step of a short one.
  assert last.shape == (B, hs.shape[-1])
  np.testing.assert_array_equal(last, expected_state.h)
  np.testing.assert_array_equal(last[0], hs[0, -1])
  np.testing.assert_array_equal(last[1], hs[1, 1])


def test_init_is_the_functional_init():
  # Eager, and every module with the same shapes: each new init shape costs seconds of compilation.
  options = dict(peephole=True, proj_size=2, forget_bias=0.5)
  layer = jnn.LSTM(I, H, **options, rngs=nnx.Rngs(0))
  assert_trees_equal(layer.params, jaxlstm.lstm_init(nnx.Rngs(0).params(), I, H, **options))
  stack = jnn.Stack(I, H, bidirectional=True, **options, rngs=nnx.Rngs(1))
  assert_trees_equal(stack.params, jaxlstm.stack_init(nnx.Rngs(1).params(), I, H, 1, bidirectional=True, **options))
  cell = jnn.LSTMCell(I, H, **options, rngs=nnx.Rngs(2))
  assert_trees_equal(cell.params, jaxlstm.lstm_init(nnx.Rngs(2).params(), I, H, **options))


def test_param_layout_round_trip():
  params = random_params(jaxlstm.lstm_init, I, H, layer_norm=True)
  layer = jnn.LSTM.from_params(params)
  state = nnx.state(layer, nnx.Param)
  assert set(state["weights"]) == {"w_x", "w_h", "b", "layer_norm"}
  assert state["weights"]["layer_norm"]["c_scale"].get_value().shape == (H,)
  assert_trees_equal(layer.params, params)
  again = jnn.LSTM.from_params(layer.params)  # module -> functional -> module
  assert_trees_equal(nnx.state(again, nnx.Param), state)
  # Stacks likewise: paths are weights/<layer>/<direction>/<field>.
  stack_params = random_params(jaxlstm.stack_init, I, H, 2, bidirectional=True, merge="sum", proj_size=2)
  stack = jnn.Stack.from_params(stack_params, merge="sum")
  assert nnx.state(stack, nnx.Param)["weights"][1]["backward"]["w_proj"].get_value().shape == (H, 2)
  assert_trees_equal(jnn.Stack.from_params(stack.params, merge="sum").params, stack_params)


def test_constructor_checks_params_layout():
  params = random_params(jaxlstm.lstm_init, I, H)
  with pytest.raises(ValueError, match="layout"):
    jnn.LSTM(I, H, peephole=True, params=params)
  with pytest.raises(ValueError, match=r"\.w_x must have shape \(4, 12\)"):
    jnn.LSTM(4, H, params=params)
  with pytest.raises(ValueError, match="needs rngs"):
    jnn.GRU(I, H)
  with pytest.raises(TypeError, match="params must be GRUParams; got LSTMParams"):
    jnn.GRU.from_params(params)
  with pytest.raises(TypeError, match="got a single LSTMParams"):
    jnn.Stack.from_params(params)


def test_stack_bidirectional_with_lengths():
  params = random_params(jaxlstm.stack_init, I, H, 2, bidirectional=True, peephole=True)
  relu_params = random_params(
    jaxlstm.stack_init, I, H, 2, cell="rnn", bidirectional=True, merge="sum", activation="relu"
  )

  @jax.jit
  def run(p, q, xs):
    model = jnn.Stack.from_params(p)
    relu = jnn.Stack.from_params(q, merge="sum")  # relu from the params
    return (
      model(xs, lengths=LENGTHS),
      model(xs, lengths=LENGTHS, return_sequences=False, return_state=True),
      jaxlstm.stack(p, xs, lengths=LENGTHS),
      relu(xs, return_sequences=False),
      jaxlstm.stack(q, xs, merge="sum")[0],
    )

  hs, (states, last), (expected_states, expected_hs), relu_last, relu_states = run(
    params, relu_params, normal((B, T, I))
  )
  np.testing.assert_array_equal(hs, expected_hs)
  assert_trees_equal(states, expected_states)
  assert last.shape == (B, 2 * H)
  # The last output joins the forward pass's final h and the backward pass's (at t = 0).
  np.testing.assert_array_equal(last, jnp.concatenate([states[-1].forward.h, states[-1].backward.h], -1))
  np.testing.assert_array_equal(last[0], jnp.concatenate([hs[0, -1, :H], hs[0, 0, H:]]))
  assert relu_last.shape == (B, H)
  np.testing.assert_array_equal(relu_last, relu_states[-1].forward.h + relu_states[-1].backward.h)


def test_stack_dropout():
  params = random_params(jaxlstm.stack_init, I, H, 2, cell="rnn")
  xs = normal((B, T, I))

  @jax.jit
  def run(p, xs, key):
    model = jnn.Stack.from_params(p, dropout=0.5)
    return (
      model(xs, deterministic=True),
      model(xs, rngs=nnx.Rngs(dropout=key)),
      jaxlstm.stack(p, xs)[1],
      jaxlstm.stack(p, xs, dropout=0.5, key=nnx.Rngs(dropout=key).dropout())[1],
    )

  deterministic, dropped, clean, expected = run(params, xs, jax.random.key(7))
  np.testing.assert_array_equal(deterministic, clean)
  # The call's rngs give exactly the functional dropout with that key.
  np.testing.assert_array_equal(dropped, expected)
  assert not np.array_equal(dropped, clean)
  # The module's own stream advances, and train()/eval()/nnx.view switch dropout.
  model = jnn.Stack.from_params(params, dropout=0.5, rngs=nnx.Rngs(0))
  call = nnx.jit(lambda m, xs: m(xs))
  first, second = call(model, xs), call(model, xs)
  assert not np.array_equal(first, second)
  assert not np.allclose(first, clean)
  model.eval()
  np.testing.assert_allclose(call(model, xs), clean, rtol=1e-6, atol=1e-7)
  model.train()
  assert not np.allclose(call(model, xs), clean)
  np.testing.assert_allclose(call(nnx.view(model, deterministic=True), xs), clean, rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="needs rngs"):
    jnn.Stack.from_params(params, dropout=0.5)(xs)


def test_grads_flow_and_equal_functional_grads():
  params = random_params(jaxlstm.lstm_init, I, H, peephole=True)
  xs = normal((B, T, I))

  @jax.jit
  def grads(p):
    layer = jnn.LSTM.from_params(p)
    g = nnx.grad(lambda m: jnp.sum(m(xs, lengths=LENGTHS) ** 2))(layer)
    nnx.update(layer, g)  # loading the grads into a module gives them the functional layout
    return layer.params, jax.grad(lambda p: jnp.sum(jaxlstm.lstm(p, xs, lengths=LENGTHS)[1] ** 2))(p)

  got, expected = grads(params)
  assert_trees_equal(got, expected)
  assert all(np.any(g != 0) for g in jax.tree.leaves(expected))


def test_eager_call_time_major_reverse():
  params = random_params(jaxlstm.gru_init, I, H)
  layer = jnn.GRU.from_params(params, time_major=True, reverse=True)
  xs = normal((T, B, I))
  _, hs = jax.jit(lambda p, x: jaxlstm.gru(p, x, time_major=True, reverse=True))(params, xs)
  np.testing.assert_allclose(layer(xs), hs, rtol=1e-6, atol=1e-7)
  # Call arguments override the module's settings.
  np.testing.assert_allclose(
    layer(jnp.swapaxes(xs, 0, 1), time_major=False), jnp.swapaxes(hs, 0, 1), rtol=1e-6, atol=1e-7
  )


@pytest.mark.parametrize("name", ["lstm_proj", "gru", "rnn_relu"])
def test_cells_in_a_python_loop(name):
  _, cell_cls, fn, init, options = LAYERS[name]
  params = random_params(init, I, H, **options)
  cell = cell_cls.from_params(params)
  assert_trees_equal(cell.params, params)
  xs = normal((B, T, I))

  @jax.jit
  def run(p, xs):
    cell = cell_cls.from_params(p)
    state = cell.initial_state((B,))
    hs = []
    for t in range(T):
      state, h = cell(state, xs[:, t])
      hs.append(h)
    return state, jnp.stack(hs, axis=1), fn(p, xs)

  state, hs, (expected_state, expected_hs) = run(params, xs)
  assert_trees_close(hs, expected_hs)
  assert_trees_close(state, expected_state)
  assert_trees_equal(cell.initial_state((B,)), jaxlstm.zero_state(params, (B,)))


def test_relu_rnn_through_layer_stack_and_cell():
  # The activation lives in the params: no module and no functional call below is told it.
  params = random_params(jaxlstm.rnn_init, I, H, activation="relu")
  stack_params = (params, random_params(jaxlstm.rnn_init, H, H, activation="relu", seed=1))
  xs = normal((B, T, I))

  @jax.jit
  def run(p, sp, xs):
    layer, stack, cell = jnn.Layer.from_params(p), jnn.Stack.from_params(sp), jnn.Cell.from_params(p)
    state, ys = cell.initial_state((B,)), []
    for t in range(T):  # the loop oracle: the cell's own step, one call per step
      state, y = cell(state, xs[:, t])
      ys.append(y)
    return (
      layer(xs, lengths=LENGTHS),
      jaxlstm.rnn(p, xs, lengths=LENGTHS)[1],
      stack(xs),
      jaxlstm.stack(sp, xs)[1],
      jnp.stack(ys, axis=1),
      jaxlstm.rnn(p, xs)[1],
      jaxlstm.rnn(p._replace(activation="tanh"), xs)[1],
    )

  hs, expected_hs, stack_hs, expected_stack_hs, loop_hs, full_hs, tanh_hs = run(params, stack_params, xs)
  np.testing.assert_array_equal(hs, expected_hs)
  np.testing.assert_array_equal(stack_hs, expected_stack_hs)
  assert_trees_close(loop_hs, full_hs)
  # It is relu indeed: non-negative with exact zeros, where tanh would give negative values.
  assert (full_hs >= 0).all() and (full_hs == 0).any()
  assert (tanh_hs < 0).any()


def test_cell_options_go_into_the_params():
  relu = jaxlstm.rnn_init(nnx.Rngs(0).params(), I, H, activation="relu")
  assert_trees_equal(jnn.RNN(I, H, activation="relu", rngs=nnx.Rngs(0)).params, relu)
  assert_trees_equal(jnn.RNNCell(I, H, activation="relu", rngs=nnx.Rngs(0)).params, relu)
  assert_trees_equal(jnn.Layer(I, H, cell="rnn", activation="relu", rngs=nnx.Rngs(0)).params, relu)
  stack = jnn.Stack(I, H, num_layers=2, cell="rnn", activation="relu", rngs=nnx.Rngs(0))
  assert [p.activation for p in stack.params] == ["relu", "relu"]
  # from_params takes the activation from the params; a restatement is fine, a contradiction raises.
  assert jnn.RNN.from_params(relu).options == {"dtype": jnp.float32, "activation": "relu"}
  assert jnn.RNN.from_params(relu, activation="relu").cell == "rnn"
  with pytest.raises(ValueError, match="activation='tanh' conflicts with the params"):
    jnn.RNN.from_params(relu, activation="tanh")
  with pytest.raises(ValueError, match="activation='tanh' conflicts with the params"):
    jnn.Stack.from_params(stack.params, activation="tanh")
  with pytest.raises(ValueError, match="built with activation='relu', but the module has activation='tanh'"):
    jnn.RNN(I, H, params=relu)
  with pytest.raises(TypeError, match="'peephole' is not an option of the 'gru' cell"):
    jnn.Layer(I, H, cell="gru", peephole=True, rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match="'activation' is not an option of the 'lstm' cell"):
    jnn.Stack(I, H, activation="relu", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="cell must be one of"):
    jnn.Cell(I, H, cell="nope", rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match="params must be RNNParams; got GRUParams"):
    jnn.RNNCell.from_params(random_params(jaxlstm.gru_init, I, H))


def test_nn_is_a_deprecated_alias_of_nnx():
  message = r"jaxlstm\.nn is deprecated and will be removed in 0\.3; use jaxlstm\.nnx"
  with pytest.warns(DeprecationWarning, match=message):
    # The first import warns; the reload warns again when another test imported the alias already.
    alias = importlib.reload(importlib.import_module("jaxlstm.nn"))
  assert alias.__all__ == jnn.__all__
  assert all(getattr(alias, name) is getattr(jnn, name) for name in jnn.__all__)
