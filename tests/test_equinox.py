"""Equinox modules (jaxlstm.equinox): equal to the functional API on the same params, under filter_jit and vmap.

As in ``tests/test_nn.py``, each comparison runs the module and the functional
API in one jitted function, so that a test costs about one compilation.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

eqx = pytest.importorskip("equinox", reason="jaxlstm.equinox is built on Equinox")

import optax  # noqa: E402

import jaxlstm  # noqa: E402
import jaxlstm.equinox as jeqx  # noqa: E402
from tests.helpers import assert_trees_equal, normal, random_params  # noqa: E402

B, T, I, H = 3, 5, 2, 3
LENGTHS = jnp.asarray([5, 2, 0])

# (cell name, functional layer, functional init, init options): the options go into the params.
LAYERS = {
  "lstm": (jaxlstm.lstm, jaxlstm.lstm_init, {}),
  "lstm_proj": (jaxlstm.lstm, jaxlstm.lstm_init, {"proj_size": 2}),
  "gru": (jaxlstm.gru, jaxlstm.gru_init, {}),
  "rnn": (jaxlstm.rnn, jaxlstm.rnn_init, {"activation": "relu"}),
}


def test_public_names_and_optional_import():
  assert jeqx.__all__ == ["Cell", "Layer", "Stack"]
  for name in jeqx.__all__:
    assert issubclass(getattr(jeqx, name), eqx.Module)
  # Equinox is optional: the package itself never imports it.
  code = "import sys, jaxlstm, jaxlstm.interop; assert 'equinox' not in sys.modules and 'haiku' not in sys.modules"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_equals_functional(name):
  fn, init, options = LAYERS[name]
  cell = name.split("_")[0]
  params = random_params(init, I, H, **options)
  layer = jeqx.Layer.from_params(params)
  assert layer.params is params and layer.cell == cell
  state0 = jax.tree.map(lambda s: normal(s.shape, seed=3), jaxlstm.zero_state(params, (B,)))

  @eqx.filter_jit
  def run(layer, xs):
    return (
      layer(xs, lengths=LENGTHS),
      layer(xs, state0, lengths=LENGTHS, reverse=True, return_sequences=False, return_state=True),
      fn(layer.params, xs, lengths=LENGTHS),
      fn(layer.params, xs, state0, lengths=LENGTHS, reverse=True),
    )

  hs, (state, last), (_, expected_hs), (expected_state, _) = run(layer, normal((B, T, I)))
  np.testing.assert_array_equal(hs, expected_hs)
  assert_trees_equal(state, expected_state)
  np.testing.assert_array_equal(last, expected_state.h)  # the last valid output is the final h


def test_init_is_the_functional_init():
  key = jax.random.key(0)
  assert_trees_equal(jeqx.Layer(3, 5, cell="gru", key=key).params, jaxlstm.gru_init(key, 3, 5))
  assert_trees_equal(
    jeqx.Cell(3, 5, peephole=True, forget_bias=0.5, key=key).params,
    jaxlstm.lstm_init(key, 3, 5, peephole=True, forget_bias=0.5),
  )
  stack = jeqx.Stack(3, 5, num_layers=2, cell="rnn", bidirectional=True, activation="relu", key=key)
  assert_trees_equal(stack.params, jaxlstm.stack_init(key, 3, 5, 2, cell="rnn", bidirectional=True, activation="relu"))
  assert stack.cell == "rnn" and stack.options["activation"] == "relu"
  # The only arrays of a module are its params: what optax and eqx.filter_grad see.
  assert_trees_equal(jax.tree.leaves(eqx.filter(stack, eqx.is_array)), jax.tree.leaves(stack.params))


def test_constructors_check_their_arguments():
  params = random_params(jaxlstm.lstm_init, I, H)
  assert jeqx.Layer(I, H, params=params).params is params
  with pytest.raises(ValueError, match=r"Layer needs key to initialize its params \(or pass params=\.\.\.\)"):
    jeqx.Layer(I, H)
  with pytest.raises(ValueError, match=r"Stack needs key"):
    jeqx.Stack(I, H)
  with pytest.raises(ValueError, match=r"params\.w_x must have shape \(4, 12\) and dtype float32; got \(2, 12\)"):
    jeqx.Cell(4, H, params=params)
  with pytest.raises(ValueError, match=r"params must have the layout .* that the module's options describe"):
    jeqx.Layer(I, H, cell="gru", params=params)
  with pytest.raises(
    ValueError,
    match=r"params must have the layout .*: the params were built with "
    r"activation='relu', but the module has activation='tanh'",
  ):
    jeqx.Layer(I, H, cell="rnn", params=random_params(jaxlstm.rnn_init, I, H, activation="relu"))
  with pytest.raises(TypeError, match=r"'peephole' is not an option of the 'gru' cell; its options are \[\]"):
    jeqx.Layer(I, H, cell="gru", peephole=True, key=jax.random.key(0))
  with pytest.raises(ValueError, match=r"cell must be one of \[.*\]; got 'lsmt'"):
    jeqx.Cell(I, H, cell="lsmt", key=jax.random.key(0))
  with pytest.raises(
    ValueError,
    match=r"peephole=False conflicts with the params, which were built with "
    r"peephole=True",
  ):
    jeqx.Layer.from_params(random_params(jaxlstm.lstm_init, I, H, peephole=True), peephole=False)
  stack = random_params(jaxlstm.stack_init, I, H, 2, cell="gru")
  assert jeqx.Stack.from_params(stack, dropout=0.5).params == stack
  with pytest.raises(ValueError, match=r"num_layers=3 conflicts with the params"):
    jeqx.Stack.from_params(stack, num_layers=3)


def test_entry_points_check_shapes():
  layer = jeqx.Layer(I, H, key=jax.random.key(0))
  with pytest.raises(ValueError, match=r"xs must have shape \(\*batch, T, I\) with I=2 .*; got shape \(3, 5, 3\)"):
    layer(jnp.zeros((B, T, I + 1)))
  cell = jeqx.Cell(I, H, cell="gru", key=jax.random.key(0))
  with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\); got \(3, 4\)"):
    cell(cell.initial_state((B,)), jnp.zeros((B, 4)))


def test_cell_steps_equal_the_layer():
  params = random_params(jaxlstm.gru_init, I, H)
  cell = jeqx.Cell.from_params(params)
  xs = normal((T, B, I))

  @eqx.filter_jit
  def run(cell, xs):
    state, ys = jax.lax.scan(lambda s, x: cell(s, x), cell.initial_state((B,)), xs)
    return (
      state,
      ys,
      jaxlstm.gru(cell.params, xs, time_major=True, impl="reference"),
      jaxlstm.gru(cell.params, xs, time_major=True),
    )

  # The reference kernel scans the same step: equal bits. The default (fused_gru) computes it differently.
  state, ys, (expected_state, expected_ys), (fused_state, fused_ys) = run(cell, xs)
  assert_trees_equal(state, expected_state)
  np.testing.assert_array_equal(ys, expected_ys)
  np.testing.assert_allclose(fused_ys, ys, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fused_state.h, state.h, rtol=1e-5, atol=1e-6)


def test_jit_vmap_and_grad():
  """filter_jit equals the eager call, vmap over unbatched rows equals the batched call, and filter_grad equals the
  functional gradient."""
  layer = jeqx.Layer.from_params(random_params(jaxlstm.lstm_init, I, H), return_sequences=False)
  xs = normal((B, T, I), seed=1)
  batched = eqx.filter_jit(lambda m, xs: m(xs, lengths=LENGTHS))(layer, xs)
  mapped = eqx.filter_jit(jax.vmap(lambda m, x, n: m(x, lengths=n), in_axes=(None, 0, 0)))(layer, xs, LENGTHS)
  np.testing.assert_allclose(mapped, batched, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(layer(xs, lengths=LENGTHS), batched)

  def loss(m, xs):
    return jnp.sum(m(xs, lengths=LENGTHS) ** 2)

  def functional_loss(params, xs):
    return jnp.sum(jaxlstm.lstm(params, xs, lengths=LENGTHS)[0].h ** 2)

  grads = eqx.filter_jit(eqx.filter_grad(loss))(layer, xs)
  expected, dxs = jax.jit(jax.grad(functional_loss, argnums=(0, 1)))(layer.params, xs)
  assert isinstance(grads, jeqx.Layer)  # the gradient is a module, as Equinox's always are
  assert_trees_equal(grads.params, expected)
  got_dxs = eqx.filter_jit(jax.grad(loss, argnums=1))(layer, xs)
  np.testing.assert_array_equal(got_dxs, dxs)


def test_stack_equals_functional_and_dropout_is_reproducible():
  params = random_params(jaxlstm.stack_init, I, H, 2, bidirectional=True)
  model = jeqx.Stack.from_params(params, dropout=0.5)
  xs = normal((B, T, I))
  k1, k2 = jax.random.key(1), jax.random.key(2)

  @eqx.filter_jit
  def run(model, xs):
    return (
      model(xs, lengths=LENGTHS, key=k1),
      model(xs, lengths=LENGTHS, key=k1),
      model(xs, lengths=LENGTHS, key=k2),
      model(xs, lengths=LENGTHS, inference=True),
      eqx.nn.inference_mode(model)(xs, lengths=LENGTHS),
      model(xs, lengths=LENGTHS, inference=True, return_sequences=False, return_state=True),
      jaxlstm.stack(model.params, xs, lengths=LENGTHS, dropout=0.5, key=k1),
      jaxlstm.stack(model.params, xs, lengths=LENGTHS),
    )

  a, a_again, b, det, det_mode, (states, last), (_, expected_dropped), (expected_states, expected) = run(model, xs)
  np.testing.assert_array_equal(a, a_again)  # the same key gives the same masks
  np.testing.assert_array_equal(a, expected_dropped)  # ... those of jaxlstm.stack with that key
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(det, expected)
  np.testing.assert_array_equal(det_mode, expected)
  assert eqx.nn.inference_mode(model).inference and not model.inference
  assert_trees_equal(states, expected_states)
  np.testing.assert_array_equal(
    last, jnp.concatenate([expected_states[-1].forward.h, expected_states[-1].backward.h], axis=-1)
  )
  with pytest.raises(ValueError, match=r"Stack with dropout=0\.5 or regularizers needs key= in the call unless"):
    model(xs)


@pytest.mark.standard_promotion  # optax promotes dtypes implicitly
def test_trains_a_step_with_optax():
  model = jeqx.Stack(I, H, num_layers=2, cell="rnn", dropout=0.25, key=jax.random.key(0))
  xs, ys = normal((B, T, I), seed=1), normal((B, T, H), seed=2)
  opt = optax.adam(1e-2)
  opt_state = opt.init(eqx.filter(model, eqx.is_array))

  @eqx.filter_jit
  def step(model, opt_state, key):
    def loss(m):
      return jnp.mean((m(xs, key=key) - ys) ** 2)

    value, grads = eqx.filter_value_and_grad(loss)(model)
    updates, opt_state = opt.update(grads, opt_state, eqx.filter(model, eqx.is_array))
    return eqx.apply_updates(model, updates), opt_state, value

  first = None
  for k in range(20):
    model, opt_state, value = step(model, opt_state, jax.random.key(k))
    first = value if first is None else first
  assert model.cell == "rnn" and model.dropout == 0.25  # still the same module
  assert float(value) < float(first)
