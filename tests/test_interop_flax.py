"""Flax interop: converted weights reproduce Flax cells (Linen and NNX), their gradients and nn.RNN."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

flax = pytest.importorskip("flax", reason="Flax is the oracle for jaxlstm.interop.flax")
from flax import linen as nn, nnx  # noqa: E402

import jaxlstm  # noqa: E402
from jaxlstm.interop.flax import flax_options, from_flax, from_flax_carry, to_flax, to_flax_carry  # noqa: E402
from tests.helpers import random_params, rel_err  # noqa: E402

pytestmark = pytest.mark.standard_promotion  # Flax promotes dtypes implicitly inside its layers

B, I, H = 3, 3, 4
TOL = 1e-5
# Cheap initializers, randomized afterwards: Flax's default orthogonal init costs a compile per cell.
ZEROS = dict(kernel_init=nnx.initializers.zeros, recurrent_kernel_init=nnx.initializers.zeros)

LINEN = {
  "linen-lstm": lambda: nn.LSTMCell(H),
  "linen-optimized-lstm": lambda: nn.OptimizedLSTMCell(H),
  "linen-gru": lambda: nn.GRUCell(H),
  "linen-simple-relu": lambda: nn.SimpleCell(H, activation_fn=jax.nn.relu),
}
NNX = {
  "nnx-lstm": lambda: nnx.LSTMCell(I, H, rngs=nnx.Rngs(0), **ZEROS),
  "nnx-optimized-lstm": lambda: nnx.OptimizedLSTMCell(I, H, rngs=nnx.Rngs(0), **ZEROS),
  "nnx-gru": lambda: nnx.GRUCell(I, H, rngs=nnx.Rngs(0), **ZEROS),
  "nnx-simple": lambda: nnx.SimpleCell(I, H, rngs=nnx.Rngs(0), **ZEROS),
  "nnx-simple-relu": lambda: nnx.SimpleCell(I, H, activation_fn=jax.nn.relu, rngs=nnx.Rngs(0), **ZEROS),
}
STEPS = {
  jaxlstm.LSTMParams: jaxlstm.lstm_step,
  jaxlstm.GRUParams: jaxlstm.gru_step,
  jaxlstm.RNNParams: jaxlstm.rnn_step,
}


def random_tree(tree, seed, scale=0.5):
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda a: jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype), tree)


def make(name, seed=0):
  """``(cell, variables)``: random weights; ``variables`` is None for NNX."""
  if name in NNX:
    cell = NNX[name]()
    nnx.update(cell, random_tree(nnx.state(cell, nnx.Param), seed))
    return cell, None
  cell = LINEN[name]()
  x = jax.ShapeDtypeStruct((B, I), jnp.float32)
  # eval_shape traces init without compiling it.
  shapes = jax.eval_shape(
    lambda x: cell.init(jax.random.key(0), cell.initialize_carry(jax.random.key(0), x.shape), x), x
  )
  return cell, random_tree(shapes, seed)


def flax_apply(cell, variables):
  """``f(weights, carry, x) -> (carry, y)`` and the weights, for either API."""
  if variables is not None:
    return cell.apply, variables
  graphdef, params, rest = nnx.split(cell, nnx.Param, ...)  # rest: the cell's RNG state, not differentiated
  return (lambda p, carry, x: nnx.merge(graphdef, p, rest)(carry, x)), params


def grads_to_ours(cell, variables, grads):
  if variables is not None:
    return from_flax(cell, grads)
  clone = nnx.clone(cell)
  nnx.update(clone, grads)
  return from_flax(clone)


@functools.cache
def our_grad(step):
  """One jitted gradient per step function, shared by the Linen and NNX cells of each kind.

  The step gets no activation: a SimpleCell's is in its converted params.
  """

  def loss(params, state, x, s, r):
    new, y = step(params, state, x)
    return sum(jnp.sum(a * b) for a, b in zip(new, s)) + jnp.sum(y * r), (new, y)

  return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))


def assert_close(got, want, what):
  got, want = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
  assert len(got) == len(want), f"{what}: {len(got)} arrays, expected {len(want)}"
  for i, (a, b) in enumerate(zip(got, want)):
    err = rel_err(a, b)
    assert err < TOL, f"{what} (array {i}): relative error {err:.2e}"


@pytest.mark.parametrize("name", list(LINEN) + list(NNX))
def test_cell_parity(name):
  """One step: new carry, output, and gradients for the weights, the carry and the input."""
  cell, variables = make(name)
  params = from_flax(cell, variables)
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((B, I)), jnp.float32)
  is_lstm = isinstance(params, jaxlstm.LSTMParams)
  leaves = [jnp.asarray(rng.standard_normal((B, H)), jnp.float32) for _ in range(2 if is_lstm else 1)]
  carry = tuple(leaves) if is_lstm else leaves[0]  # Flax's LSTM carry is (c, h)
  state = from_flax_carry(carry, cell)
  s = [jnp.asarray(rng.standard_normal((B, H)), jnp.float32) for _ in state]
  r = jnp.asarray(rng.standard_normal((B, H)), jnp.float32)

  apply, weights = flax_apply(cell, variables)

  def flax_loss(weights, carry, x):
    new, y = apply(weights, carry, x)
    new_state = from_flax_carry(new, cell)
    return sum(jnp.sum(a * b) for a, b in zip(new_state, s)) + jnp.sum(y * r), (new_state, y)

  (f_gw, f_gc, f_gx), (f_new, f_y) = jax.jit(jax.grad(flax_loss, argnums=(0, 1, 2), has_aux=True))(weights, carry, x)
  step = STEPS[type(params)]
  assert flax_options(cell) == {}
  (o_gp, o_gs, o_gx), (o_new, o_y) = our_grad(step)(params, state, x, s, r)
  assert_close(o_new, f_new, "new state")
  assert_close(o_y, f_y, "output")
  assert_close(o_gx, f_gx, "d/dx")
  assert_close(to_flax_carry(o_gs), f_gc, "d/dcarry")
  if name == "nnx-gru":  # NNX's GRUCell has no b_hn: it is 0 in ours, and its gradient has no Flax counterpart
    o_gp = o_gp._replace(b_hn=jnp.zeros_like(o_gp.b_hn))
  assert_close(o_gp, grads_to_ours(cell, variables, f_gw), "d/dparams")


def test_rnn_over_a_sequence_with_lengths():
  """Linen's nn.RNN(LSTMCell) with seq_lengths equals jaxlstm.lstm with lengths at valid steps."""
  cell, variables = make("linen-lstm", seed=2)
  rnn = nn.RNN(cell, return_carry=True)
  variables = {"params": {"cell": variables["params"]}}
  xs = jnp.asarray(np.random.default_rng(3).standard_normal((B, 5, I)), jnp.float32)
  lengths = np.array([5, 2, 4])
  carry, ys = jax.jit(rnn.apply)(variables, xs, seq_lengths=jnp.asarray(lengths))
  final, hs = jax.jit(jaxlstm.lstm)(from_flax(rnn, variables), xs, lengths=jnp.asarray(lengths))
  valid = (np.arange(5)[None, :] < lengths[:, None])[..., None]
  assert_close(hs * valid, ys * valid, "outputs at valid steps")
  assert_close(final, from_flax_carry(carry, rnn), "final carry")


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_relu_simple_cell_over_a_sequence(api):
  """A converted relu SimpleCell computes relu in a plain jaxlstm.rnn, as Flax's RNN over the cell does."""
  xs = jnp.asarray(np.random.default_rng(6).standard_normal((B, 5, I)), jnp.float32)
  if api == "linen":
    cell, variables = make("linen-simple-relu", seed=7)
    rnn = nn.RNN(cell, return_carry=True)
    variables = {"params": {"cell": variables["params"]}}
    carry, ys = jax.jit(rnn.apply)(variables, xs)
    params = from_flax(rnn, variables)
  else:
    cell, _ = make("nnx-simple-relu", seed=7)
    carry, ys = nnx.RNN(cell, return_carry=True)(xs)
    params = from_flax(cell)
  final, hs = jaxlstm.rnn(params, xs)
  assert_close(hs, ys, "outputs")
  assert_close(final, from_flax_carry(carry, cell), "final carry")


def test_to_flax_refuses_the_other_activation():
  """relu weights are never written into a tanh SimpleCell, nor tanh into relu; NNX cells are left unchanged."""
  relu = random_params(jaxlstm.rnn_init, I, H, activation="relu")
  with pytest.raises(
    ValueError,
    match=r"params\.activation is 'relu' but flax SimpleCell has activation_fn='tanh'; "
    r"build the peer with activation_fn='relu'",
  ):
    to_flax(relu, nn.SimpleCell(H))
  with pytest.raises(ValueError, match=r"params\.activation is 'tanh' but flax SimpleCell has activation_fn='relu'"):
    to_flax(relu._replace(activation="tanh"), nn.RNN(nn.SimpleCell(H, activation_fn=jax.nn.relu)))
  cell, _ = make("nnx-simple")
  before = from_flax(cell)  # copies of the weights
  with pytest.raises(ValueError, match=r"params\.activation is 'relu' but flax SimpleCell has activation_fn='tanh'"):
    to_flax(relu, cell)
  assert_bitwise(from_flax(cell), before)
  assert from_flax(to_flax(relu, make("nnx-simple-relu")[0])).activation == "relu"  # the same one is written


def assert_bitwise(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", list(LINEN) + list(NNX))
def test_round_trip_is_exact(name):
  cell, variables = make(name, seed=4)
  params = from_flax(cell, variables)
  target, _ = make(name, seed=5)
  out = to_flax(params, target)
  if name in NNX:
    assert out is target
    assert_bitwise(from_flax(target), params)
  else:
    assert_bitwise(out, variables)  # the very same Linen dict
    assert_bitwise(from_flax(target, out), params)


def test_layout():
  """Pin the layouts: Linen's per-gate kernels concatenate in i, f, g, o; Flax's carry is (c, h)."""
  cell, variables = make("linen-lstm")
  p = from_flax(cell, variables)
  v = variables["params"]
  np.testing.assert_array_equal(p.w_x[:, H : 2 * H], v["if"]["kernel"])
  np.testing.assert_array_equal(p.b[3 * H :], v["ho"]["bias"])
  gru, gv = make("linen-gru")
  np.testing.assert_array_equal(from_flax(gru, gv).b_hn, gv["params"]["hn"]["bias"])
  nnx_gru, _ = make("nnx-gru")
  np.testing.assert_array_equal(from_flax(nnx_gru).b_hn, np.zeros(H))
  c, h = jnp.zeros((B, H)), jnp.ones((B, H))
  state = from_flax_carry((c, h), cell)
  assert isinstance(state, jaxlstm.LSTMState) and state.h is h and state.c is c
  assert to_flax_carry(state) == (c, h)
  relu, relu_vars = make("linen-simple-relu")
  assert flax_options(relu) == {}  # the activation travels in the params
  assert from_flax(relu, relu_vars).activation == "relu" and from_flax(make("nnx-simple")[0]).activation == "tanh"
  assert from_flax(make("nnx-simple-relu")[0]).activation == "relu"
  assert flax_options(cell) == {}


def test_errors():
  nnx_gru, _ = make("nnx-gru")
  g = random_params(jaxlstm.gru_init, I, H)
  with pytest.raises(
    ValueError,
    match=r"params\.b_hn must be all zeros because flax NNX's GRUCell has no "
    r"recurrent candidate bias",
  ):
    to_flax(g, nnx_gru)
  to_flax(g._replace(b_hn=np.zeros((H,), np.float32)), nnx_gru)
  with pytest.raises(
    TypeError,
    match=r"cell must be a flax LSTMCell, OptimizedLSTMCell, GRUCell or SimpleCell "
    r"\(Linen or NNX\), or Linen's ConvLSTMCell; got flax\.linen\.linear\.Dense",
  ):
    from_flax(nn.Dense(3), {})
  with pytest.raises(ValueError, match=r"variables must be given for a Linen cell .*; got None"):
    from_flax(nn.LSTMCell(H))
  with pytest.raises(
    ValueError,
    match=r"variables\['params'\] must hold ii/kernel for this cell; got keys "
    r"\['hn', 'hr'",
  ):
    from_flax(nn.LSTMCell(H), make("linen-gru")[1])
  with pytest.raises(ValueError, match=r"cell\.activation_fn must be tanh; got relu"):
    from_flax(nn.LSTMCell(H, activation_fn=jax.nn.relu), {})
  with pytest.raises(ValueError, match=r"cell\.gate_fn must be sigmoid; got hard_sigmoid"):
    from_flax(nn.GRUCell(H, gate_fn=jax.nn.hard_sigmoid), {})
  with pytest.raises(ValueError, match=r"cell\.residual must be False"):
    from_flax(nn.SimpleCell(H, residual=True), {})
  lstm = random_params(jaxlstm.lstm_init, I, H)
  with pytest.raises(TypeError, match=r"params must be GRUParams for this flax GRUCell; got LSTMParams"):
    to_flax(lstm, nn.GRUCell(H))
  with pytest.raises(
    TypeError,
    match=r"params must be LSTMParams for this flax LSTMCell; got tuple \(a stack "
    r"tuple was given",
  ):
    to_flax((lstm,), nn.LSTMCell(H))
  with pytest.raises(
    ValueError,
    match=r"params\.w_x must have shape \(3, 20\) to match the cell's 5 features; "
    r"got \(3, 16\)",
  ):
    to_flax(lstm, nn.LSTMCell(5))
  with pytest.raises(
    ValueError,
    match=r"params\.w_x must have shape \(2, 16\) to match cell\.in_features=2; "
    r"got \(3, 16\)",
  ):
    to_flax(lstm, nnx.OptimizedLSTMCell(2, H, rngs=nnx.Rngs(0), **ZEROS))
  with pytest.raises(TypeError, match=r"params\.w_x has dtype float64 but cell \(param_dtype\) holds float32"):
    to_flax(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), lstm), nn.LSTMCell(H))
  with pytest.raises(ValueError, match=r"params\.layer_norm must be None: flax LSTMCell has no layer norm"):
    to_flax(random_params(jaxlstm.lstm_init, I, H, layer_norm=True), nn.LSTMCell(H))
  with pytest.raises(TypeError, match=r"carry must be Flax's LSTM carry \(c, h\); got ArrayImpl"):
    from_flax_carry(jnp.zeros((B, H)), nn.LSTMCell(H))
  with pytest.raises(TypeError, match=r"state must be LSTMState, GRUState, RNNState or ConvLSTMState; got tuple"):
    to_flax_carry((1, 2))
