"""Keras 3 interop: converted weights reproduce Keras' outputs, final states and gradients.

Keras runs on its JAX backend, so its gradients come from ``jax.grad`` of
``layer.stateless_call``: Keras' own implementation, differentiated. Masks are
compared where Keras and jaxlstm define the same thing: the states, and the
outputs at valid steps (at masked steps Keras repeats the previous output or
writes zeros, jaxlstm writes zeros).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras", reason="Keras 3 is the oracle for jaxlstm.interop.keras")
if keras.backend.backend() != "jax":
  pytest.skip(
    f"these tests differentiate Keras with jax.grad, so they need KERAS_BACKEND=jax; got {keras.backend.backend()!r}",
    allow_module_level=True,
  )

import jaxlstm  # noqa: E402
from jaxlstm.interop.keras import from_keras, keras_options, to_keras  # noqa: E402
from tests.helpers import random_params, rel_err  # noqa: E402

pytestmark = pytest.mark.standard_promotion  # Keras promotes dtypes implicitly inside its layers

B, T, I, H = 3, 5, 3, 4
TOL = 1e-5
LENGTHS = np.array([5, 2, 4])
layers = keras.layers


# Layers are built with cheap initializers, then randomized: Keras' default
# orthogonal initializer costs seconds of compilation per layer.
ZEROS = dict(kernel_initializer="zeros", recurrent_initializer="zeros")


def randomize(layer, seed=0, scale=0.5):
  rng = np.random.default_rng(seed)
  for v in layer.weights:
    v.assign(scale * rng.standard_normal(tuple(v.shape)).astype(np.float32))
  return layer


def built(layer, input_size=I, seed=0):
  layer.build(
    (None, I)
    if isinstance(layer, (layers.LSTMCell, layers.GRUCell, layers.SimpleRNNCell))
    else (None, None, input_size)
  )
  return randomize(layer, seed)


def assert_close(got, want, what):
  got, want = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
  assert len(got) == len(want), f"{what}: {len(got)} arrays, expected {len(want)}"
  for i, (a, b) in enumerate(zip(got, want)):
    err = rel_err(a, b)
    assert err < TOL, f"{what} (array {i}): relative error {err:.2e}"


def keras_grads(layer_list, grads):
  """Keras' weight gradients in our layout: ``from_keras`` of the layers holding the gradients.

  A GRU's input and recurrent biases of the r and z gates fold into our one
  ``b``, so both get the same gradient; the recurrent copy is zeroed so that
  ``from_keras``'s sum counts it once.
  """
  for layer, g in zip(layer_list, grads):
    for v, gv in zip(layer.trainable_variables, g):
      gv = np.array(gv)
      if v.path.endswith("bias") and gv.ndim == 2:  # GRU (2, 3H): input row, recurrent row; z, r, h
        np.testing.assert_allclose(gv[1, : 2 * H], gv[0, : 2 * H], rtol=1e-6, atol=1e-7)
        gv[1, : 2 * H] = 0
      v.assign(gv)
  return from_keras(layer_list)


def run_parity(layer_list, mask=None, lengths=None, seed=1):
  """Runs Keras and jaxlstm on the same inputs; compares valid outputs, states and all gradients."""
  rng = np.random.default_rng(seed)
  xs = rng.standard_normal((B, T, I)).astype(np.float32)
  params = from_keras(layer_list)
  opts = keras_options(layer_list)
  valid = np.ones((B, T), bool) if mask is None else mask
  if lengths is not None:
    valid = np.arange(T)[None, :] < lengths[:, None]
  F = 2 * H if isinstance(params[-1], jaxlstm.Bidirectional) and opts["merge"] == "concat" else H
  r = (rng.standard_normal((B, T, F)) * valid[..., None]).astype(np.float32)
  n_states = sum(
    2 if isinstance(p, jaxlstm.LSTMParams) else 1
    for p in jax.tree_util.tree_leaves(params, is_leaf=lambda p: hasattr(p, "w_x"))
  )
  s = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(n_states)]
  kmask = None if mask is None and lengths is None else jnp.asarray(valid)

  def keras_loss(tvars, xs):
    h, states = xs, []
    for layer, tv in zip(layer_list, tvars):
      out, _ = layer.stateless_call(tv, [v.value for v in layer.non_trainable_variables], h, mask=kmask)
      h, *st = out
      states += st
    return jnp.sum(h * r) + sum(jnp.sum(a * b) for a, b in zip(states, s)), (h, states)

  def our_loss(params, xs):
    finals, hs = jaxlstm.stack(
      params,
      xs,
      lengths=None if lengths is None else jnp.asarray(lengths),
      mask=None if mask is None else jnp.asarray(mask),
      **opts,
    )
    # Keras returns an LSTM's state as [h, c] and a Bidirectional's as forward then backward.
    states = jax.tree_util.tree_leaves(finals)
    return jnp.sum(hs * r) + sum(jnp.sum(a * b) for a, b in zip(states, s)), (hs, states)

  tvars = [[v.value for v in layer.trainable_variables] for layer in layer_list]
  (k_gv, k_gx), (k_hs, k_states) = jax.jit(jax.grad(keras_loss, argnums=(0, 1), has_aux=True))(tvars, xs)
  (o_gp, o_gx), (o_hs, o_states) = jax.jit(jax.grad(our_loss, argnums=(0, 1), has_aux=True))(params, xs)
  assert_close(o_hs * valid[..., None], k_hs * valid[..., None], "outputs at valid steps")
  assert_close(o_states, k_states, "final states")
  assert_close(o_gx, k_gx, "d/dxs")
  # Our params always have a bias; a use_bias=False layer has none, so its bias gradient is not compared.
  o_gp = tuple(
    p
    if _cell(l).use_bias
    else jax.tree_util.tree_map(lambda q: q._replace(b=jnp.zeros_like(q.b)), p, is_leaf=lambda q: hasattr(q, "w_x"))
    for p, l in zip(o_gp, layer_list)
  )
  assert_close(o_gp, keras_grads(layer_list, k_gv), "d/dparams")


def _cell(layer):
  return layer.forward_layer.cell if isinstance(layer, layers.Bidirectional) else layer.cell


def test_bidirectional_lstm_with_lengths():
  """Bidirectional(LSTM) with a right-padded mask equals jaxlstm.stack with lengths."""
  layer = built(
    layers.Bidirectional(layers.LSTM(H, return_sequences=True, return_state=True, **ZEROS), merge_mode="concat")
  )
  assert keras_options(layer) == {"merge": "concat"}
  run_parity([layer], lengths=LENGTHS)


def test_gru_then_bidirectional_relu_rnn_with_a_mask_with_gaps():
  """A list of layers is a stack; a mask with gaps is our mask. Covers GRU, SimpleRNN(relu), use_bias=False, mul."""
  stack = [
    built(layers.GRU(H, return_sequences=True, return_state=True, **ZEROS), seed=0),
    built(
      layers.Bidirectional(
        layers.SimpleRNN(H, activation="relu", use_bias=False, return_sequences=True, return_state=True, **ZEROS),
        merge_mode="mul",
      ),
      H,
      seed=1,
    ),
  ]
  assert stack[0].cell.reset_after
  assert keras_options(stack) == {"merge": "mul"}  # the activation travels in the params
  mask = np.array([[1, 1, 0, 1, 1], [1, 0, 0, 1, 1], [1, 1, 1, 1, 0]], bool)
  run_parity(stack, mask=mask)


@pytest.mark.parametrize(
  "make,step",
  [
    (lambda: layers.LSTMCell(H, use_bias=False, **ZEROS), jaxlstm.lstm_step),
    (lambda: layers.GRUCell(H, **ZEROS), jaxlstm.gru_step),
    (lambda: layers.SimpleRNNCell(H, **ZEROS), jaxlstm.rnn_step),
    (lambda: layers.SimpleRNNCell(H, activation="relu", **ZEROS), jaxlstm.rnn_step),
  ],
  ids=["lstm-no-bias", "gru", "rnn", "rnn-relu"],
)
def test_cell_parity(make, step):
  cell = built(make())
  params = from_keras(cell)
  rng = np.random.default_rng(3)
  x = rng.standard_normal((B, I)).astype(np.float32)
  h = rng.standard_normal((B, H)).astype(np.float32)
  c = rng.standard_normal((B, H)).astype(np.float32)
  is_lstm = isinstance(params, jaxlstm.LSTMParams)
  out, new = cell(x, [h, c] if is_lstm else [h])
  state = jaxlstm.LSTMState(h, c) if is_lstm else type(jaxlstm.zero_state(params))(h)
  assert keras_options(cell) == {}
  new_state, y = step(params, state, x)
  assert_close(y, out, "output")
  assert_close(list(new_state), new, "new state")


RELU_LAYERS = {
  "relu": lambda: built(layers.SimpleRNN(H, activation="relu", return_sequences=True, return_state=True, **ZEROS)),
  "bi-relu": lambda: built(
    layers.Bidirectional(layers.SimpleRNN(H, activation="relu", return_sequences=True, return_state=True, **ZEROS))
  ),
  # Each layer keeps its own activation, so a list that mixes them is one stack.
  "relu-then-tanh": lambda: [
    built(layers.SimpleRNN(H, activation="relu", return_sequences=True, return_state=True, **ZEROS), seed=1),
    built(layers.SimpleRNN(H, return_sequences=True, return_state=True, **ZEROS), H, seed=2),
  ],
}


@pytest.mark.parametrize("name", RELU_LAYERS)
def test_relu_simple_rnn_runs_as_a_plain_stack(name):
  """A converted SimpleRNN(activation="relu") computes relu in jaxlstm.stack without any extra argument."""
  layer = RELU_LAYERS[name]()
  layer_list = layer if isinstance(layer, list) else [layer]
  params = from_keras(layer)
  # Nothing to pass: Bidirectional's default merge_mode, "concat", is jaxlstm.stack's default merge.
  assert keras_options(layer) == ({"merge": "concat"} if name == "bi-relu" else {})
  xs = np.random.default_rng(5).standard_normal((B, T, I)).astype(np.float32)
  h, states = xs, []
  for l in layer_list:  # Keras' own forward pass is the oracle
    h, *st = l(h)
    states += st
  finals, hs = jaxlstm.stack(params, jnp.asarray(xs))
  assert_close(hs, h, "outputs")
  assert_close(jax.tree_util.tree_leaves(finals), states, "final states")


def test_to_keras_refuses_the_other_activation():
  """relu weights are never written into a tanh SimpleRNN, nor tanh into relu; nothing is written on error."""
  relu = from_keras(RELU_LAYERS["bi-relu"]())
  target = built(layers.Bidirectional(layers.SimpleRNN(H, **ZEROS)), seed=3)
  before = [np.asarray(v) for v in target.weights]
  with pytest.raises(
    ValueError,
    match=r"params\[0\]\.forward\.activation is 'relu' but "
    r"layer\.forward_layer\.cell has activation='tanh'; build the peer with "
    r"activation='relu'",
  ):
    to_keras(relu, target)
  assert all((a == np.asarray(v)).all() for a, v in zip(before, target.weights)), "nothing written on error"
  unbuilt = layers.SimpleRNN(H, activation="relu", **ZEROS)
  tanh = (relu[0].forward._replace(activation="tanh"),)
  with pytest.raises(
    ValueError,
    match=r"params\[0\]\.activation is 'tanh' but layer\.cell has "
    r"activation='relu'",
  ):
    to_keras(tanh, unbuilt)
  assert not unbuilt.built, "a refused layer is left unbuilt"
  with pytest.raises(ValueError, match=r"params\.activation is 'relu' but layer has activation='tanh'"):
    to_keras(relu[0].forward, layers.SimpleRNNCell(H, **ZEROS))
  assert from_keras(to_keras(tanh, layers.SimpleRNN(H, **ZEROS)))[0].activation == "tanh"  # the same one is written


ROUND_TRIP_LAYERS = {
  "lstm": lambda: layers.LSTM(H, **ZEROS),
  "lstm-no-bias": lambda: layers.LSTM(H, use_bias=False, **ZEROS),
  "gru": lambda: layers.GRU(H, **ZEROS),
  "gru-no-bias": lambda: layers.GRU(H, use_bias=False, **ZEROS),
  "rnn": lambda: layers.SimpleRNN(H, **ZEROS),
  "bi-gru-ave": lambda: layers.Bidirectional(layers.GRU(H, **ZEROS), merge_mode="ave"),
  "rnn-of-lstm-cell": lambda: layers.RNN(layers.LSTMCell(H, **ZEROS)),
  "gru-cell": lambda: layers.GRUCell(H, **ZEROS),
  "list": lambda: [layers.Bidirectional(layers.LSTM(H, **ZEROS)), layers.SimpleRNN(H, **ZEROS)],
}


def assert_bitwise(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", ROUND_TRIP_LAYERS)
def test_round_trip_is_exact(name):
  """ours -> Keras -> ours is bit for bit, also into an unbuilt layer (which to_keras builds)."""
  source = ROUND_TRIP_LAYERS[name]()
  if isinstance(source, list):
    source = [built(source[0], seed=3), built(source[1], 2 * H, seed=4)]
  else:
    source = built(source, seed=3)
  params = from_keras(source)
  target = ROUND_TRIP_LAYERS[name]()
  assert to_keras(params, target) is target
  assert all(l.built for l in (target if isinstance(target, list) else [target]))
  assert_bitwise(from_keras(target), params)


def test_layout():
  """Pin the layouts: Keras' GRU gates z, r, h become r, z, n, and the recurrent bias row splits."""
  gru = built(layers.GRU(H, **ZEROS))
  (p,) = from_keras(gru)
  k = np.asarray(gru.cell.kernel)
  np.testing.assert_array_equal(p.w_x[:, :H], k[:, H : 2 * H])  # r
  np.testing.assert_array_equal(p.w_x[:, H : 2 * H], k[:, :H])  # z
  bias = np.asarray(gru.cell.bias)
  np.testing.assert_array_equal(p.b_hn, bias[1, 2 * H :])
  np.testing.assert_array_equal(p.b[:H], bias[0, H : 2 * H] + bias[1, H : 2 * H])
  to_keras((p,), gru)
  np.testing.assert_array_equal(np.asarray(gru.cell.bias)[1], np.concatenate([np.zeros(2 * H), p.b_hn]))
  lstm = built(layers.LSTM(H, **ZEROS))
  np.testing.assert_array_equal(from_keras(lstm)[0].w_h, np.asarray(lstm.cell.recurrent_kernel))


def test_errors():
  with pytest.raises(
    ValueError,
    match=r"layer\.cell\.reset_after must be True: with reset_after=False Keras "
    r"computes \(r \* h\) @ U_h, .* cannot represent .*; got False",
  ):
    from_keras(built(layers.GRU(H, reset_after=False, **ZEROS)))
  with pytest.raises(
    TypeError,
    match=r"layer must be a keras\.layers\.LSTM, GRU, SimpleRNN, .*; got "
    r"keras\.src\.layers\.core\.dense\.Dense",
  ):
    from_keras(layers.Dense(3))
  with pytest.raises(ValueError, match=r"layer\.cell must be built before its weights can be read"):
    from_keras(layers.LSTM(H, **ZEROS))
  with pytest.raises(ValueError, match=r"layer\.cell\.recurrent_activation must be 'sigmoid'; got 'hard_sigmoid'"):
    from_keras(built(layers.LSTM(H, recurrent_activation="hard_sigmoid", **ZEROS)))
  with pytest.raises(ValueError, match=r"layer\.cell\.activation must be 'tanh' or 'relu'; got 'elu'"):
    from_keras(built(layers.SimpleRNN(H, activation="elu", **ZEROS)))
  with pytest.raises(ValueError, match=r"layer\.merge_mode must be one of .*; got None"):
    keras_options(built(layers.Bidirectional(layers.LSTM(H, return_sequences=True, **ZEROS), merge_mode=None)))
  with pytest.raises(ValueError, match=r"layer\.go_backwards must be False to run as jaxlstm\.stack"):
    keras_options(layers.LSTM(H, go_backwards=True, **ZEROS))
  with pytest.raises(
    ValueError,
    match=r"layer must use one merge in all layers .*got \{'layer\[0\]': 'sum', "
    r"'layer\[1\]': 'mul'\}",
  ):
    keras_options(
      [
        layers.Bidirectional(layers.SimpleRNN(H, **ZEROS), merge_mode="sum"),
        layers.Bidirectional(layers.SimpleRNN(H, **ZEROS), merge_mode="mul"),
      ]
    )

  p = random_params(jaxlstm.lstm_init, I, H)
  with pytest.raises(
    TypeError,
    match=r"params must be a tuple of layer params .* got a single LSTMParams "
    r"\(wrap it in a tuple\)",
  ):
    to_keras(p, layers.LSTM(H, **ZEROS))
  with pytest.raises(ValueError, match=r"params must have 2 layers to match the 2 Keras layer\(s\); got 1"):
    to_keras((p,), [layers.LSTM(H, **ZEROS), layers.LSTM(H, **ZEROS)])
  with pytest.raises(TypeError, match=r"params\[0\] must be GRUParams for this Keras GRUCell; got LSTMParams"):
    to_keras((p,), layers.GRU(H, **ZEROS))
  with pytest.raises(
    ValueError,
    match=r"params\[0\]\.w_x must have shape \(I, 20\) to match "
    r"layer\.cell\.units=5; got \(3, 16\)",
  ):
    to_keras((p,), layers.LSTM(5, **ZEROS))
  with pytest.raises(
    ValueError,
    match=r"params\[0\]\.w_x must have shape \(2, 16\) \(the shape of "
    r"layer\.cell\.kernel\); got \(3, 16\)",
  ):
    to_keras((p,), built(layers.LSTM(H, **ZEROS), input_size=2))
  with pytest.raises(TypeError, match=r"params\[0\]\.w_x has dtype float64 but layer\.cell holds float32"):
    to_keras((jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p),), layers.LSTM(H, **ZEROS))
  with pytest.raises(ValueError, match=r"params\[0\]\.peephole must be None: Keras LSTMCell has no peephole"):
    to_keras((random_params(jaxlstm.lstm_init, I, H, peephole=True),), layers.LSTM(H, **ZEROS))
  with pytest.raises(
    TypeError,
    match=r"params\[0\] must be a Bidirectional\(forward, backward\) pair, since "
    r"layer is bidirectional; got LSTMParams",
  ):
    to_keras((p,), layers.Bidirectional(layers.LSTM(H, **ZEROS)))
  with pytest.raises(
    ValueError,
    match=r"params\.b must be all zeros because layer\.use_bias is False; "
    r"got max \|b\| = ",
  ):
    to_keras(p, layers.LSTMCell(H, use_bias=False, **ZEROS))
  g = random_params(jaxlstm.gru_init, I, H)
  no_bias = built(layers.GRU(H, use_bias=False, **ZEROS))
  before = [np.asarray(v) for v in no_bias.weights]
  with pytest.raises(
    ValueError,
    match=r"params\[0\]\.b_hn must be all zeros because layer\.cell\.use_bias is "
    r"False",
  ):
    to_keras((g._replace(b=np.zeros((3 * H,), np.float32)),), no_bias)
  assert all((a == np.asarray(v)).all() for a, v in zip(before, no_bias.weights)), "nothing written on error"
