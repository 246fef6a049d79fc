"""Haiku interop: converted weights reproduce hk.LSTM and hk.VanillaRNN under hk.dynamic_unroll, gradients included.

The oracle is the real Haiku core on random weights, unrolled over time; the
comparisons are in float32 within 1e-5 relative error. Haiku's weight
gradients are mapped into our layout by hand (:func:`grads_to_ours`), since
:func:`from_haiku` folds Haiku's forget-gate +1 into the bias, which a
gradient must not get.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

hk = pytest.importorskip("haiku", reason="Haiku is the oracle for jaxlstm.interop.haiku")

import jaxlstm  # noqa: E402
from jaxlstm.interop.haiku import from_haiku, from_haiku_state, to_haiku, to_haiku_state  # noqa: E402
from tests.helpers import assert_trees_equal, normal, random_params, rel_err  # noqa: E402

B, T, I, H = 3, 5, 3, 4
TOL = 1e-5
CORES = {
  "lstm": lambda: hk.LSTM(H),
  "rnn": lambda: hk.VanillaRNN(H),
  "rnn-single-bias": lambda: hk.VanillaRNN(H, double_bias=False),
}


def unrolled(name, wrap=False):
  """``hk.dynamic_unroll`` of the core, transformed: ``apply(params, xs (T, B, I), state) -> (ys, final)``.

  With ``wrap``, the core sits inside a module of the user's, so its params' paths start with ``model/``.
  """

  def unroll(xs, state):
    return hk.dynamic_unroll(CORES[name](), xs, state)

  def wrapped(xs, state):
    return hk.to_module(unroll)(name="model")(xs, state)

  return hk.without_apply_rng(hk.transform(wrapped if wrap else unroll))


def initial_state(name, seed=2):
  if name == "lstm":
    return hk.LSTMState(hidden=normal((B, H), seed=seed), cell=normal((B, H), seed=seed + 1))
  return normal((B, H), seed=seed)


def make(name, seed=0, wrap=False):
  """``(transformed, params)`` with N(0, 0.5²) weights everywhere."""
  f = unrolled(name, wrap)
  shapes = jax.eval_shape(f.init, jax.random.key(0), jnp.zeros((T, B, I), jnp.float32), initial_state(name))
  rng = np.random.default_rng(seed)
  return f, jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)


def grads_to_ours(name, grads):
  """Haiku's weight gradients in our layout: the LSTM's gates reordered and split, with no +1; the RNN's two bias
  gradients (equal, as they are summed into one) counted once."""
  if name == "lstm":
    g = grads["lstm/linear"]
    w = np.concatenate([np.split(np.asarray(g["w"]), 4, axis=-1)[k] for k in (0, 2, 1, 3)], axis=-1)
    b = np.concatenate([np.split(np.asarray(g["b"]), 4)[k] for k in (0, 2, 1, 3)])
    return jaxlstm.LSTMParams(w[:I], w[I:], b)
  x, h = grads["vanilla_rnn/linear"], grads["vanilla_rnn/linear_1"]
  if "b" in h:
    np.testing.assert_array_equal(x["b"], h["b"])
  return jaxlstm.RNNParams(x["w"], h["w"], x["b"], activation="relu")


def assert_close(got, want, what, record):
  got, want = jax.tree.leaves(got), jax.tree.leaves(want)
  assert len(got) == len(want), f"{what}: {len(got)} arrays, expected {len(want)}"
  for i, (a, b) in enumerate(zip(got, want)):
    err = rel_err(a, b)
    record.append(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))))
    assert err < TOL, f"{what} (array {i}): relative error {err:.2e}"


@pytest.mark.parametrize("name", list(CORES))
def test_sequence_parity(name):
  """Outputs, final state and the gradients for the weights, the initial state and the inputs, over T steps."""
  f, hk_params = make(name)
  params = from_haiku(hk_params)
  assert isinstance(params, jaxlstm.LSTMParams if name == "lstm" else jaxlstm.RNNParams)
  xs, state = normal((T, B, I), seed=1), initial_state(name)
  r, s = normal((T, B, H), seed=4), normal((B, H), seed=5)

  def hk_loss(weights, state, xs):
    ys, final = f.apply(weights, xs, state)
    final = from_haiku_state(final)
    return jnp.sum(ys * r) + jnp.sum(final.h * s), (final, ys)

  def our_loss(params, state, xs):
    final, ys = jaxlstm.layer(params, xs, state, time_major=True)
    return jnp.sum(ys * r) + jnp.sum(final.h * s), (final, ys)

  grad = (0, 1, 2)
  (h_gw, h_gs, h_gx), (h_final, h_ys) = jax.jit(jax.grad(hk_loss, grad, has_aux=True))(hk_params, state, xs)
  (o_gp, o_gs, o_gx), (o_final, o_ys) = jax.jit(jax.grad(our_loss, grad, has_aux=True))(
    params, from_haiku_state(state), xs
  )
  diffs = []
  assert_close(o_ys, h_ys, "outputs", diffs)
  assert_close(o_final, h_final, "final state", diffs)
  assert_close(o_gx, h_gx, "d/dxs", diffs)
  assert_close(to_haiku_state(o_gs), h_gs, "d/dstate", diffs)
  assert_close(o_gp, grads_to_ours(name, h_gw), "d/dweights", diffs)
  print(f"{name}: max abs difference {max(diffs):.2e}")


def test_lstm_forget_gate_plus_one_is_folded_into_the_bias():
  """Pin the layout: gates i, g, f, o in Haiku, w = [w_x; w_h], and Haiku's run-time +1 in our forget bias."""
  _, hk_params = make("lstm")
  w, b = np.asarray(hk_params["lstm/linear"]["w"]), np.asarray(hk_params["lstm/linear"]["b"])
  p = from_haiku(hk_params)
  np.testing.assert_array_equal(p.w_x[:, :H], w[:I, :H])  # i
  np.testing.assert_array_equal(p.w_x[:, H : 2 * H], w[:I, 2 * H : 3 * H])  # f is Haiku's third block
  np.testing.assert_array_equal(p.w_h[:, 2 * H : 3 * H], w[I:, H : 2 * H])  # g is its second
  np.testing.assert_array_equal(p.b[H : 2 * H], b[2 * H : 3 * H] + np.float32(1))
  np.testing.assert_array_equal(p.b[3 * H :], b[3 * H :])
  # Haiku's own init (zero bias) reads as our default forget bias of 1, and back.
  f = unrolled("lstm")
  init = f.init(jax.random.key(0), jnp.zeros((T, B, I), jnp.float32), initial_state("lstm"))
  assert_trees_equal(from_haiku(init).b, jnp.zeros(4 * H, jnp.float32).at[H : 2 * H].set(1))
  assert_trees_equal(to_haiku(from_haiku(init)), init)


def test_round_trips():
  """ours -> Haiku -> ours is exact, except a forget bias below 0.5, which is off by at most half an ulp of
  ``b_f - 1``; an RNN's is exact, and so is its split bias read back through one bias."""
  lstm = random_params(jaxlstm.lstm_init, I, H, seed=6)
  # Forget biases of at least 0.5, where b - 1 is exact (Sterbenz): the trip is exact.
  high = lstm._replace(b=lstm.b.at[H : 2 * H].set(0.5 + jnp.abs(lstm.b[H : 2 * H])))
  assert_trees_equal(from_haiku(to_haiku(high)), high)
  back = from_haiku(to_haiku(lstm))
  assert_trees_equal(back._replace(b=lstm.b), lstm)  # every weight exact
  got, want = np.asarray(back.b), np.asarray(lstm.b)
  np.testing.assert_array_equal(np.delete(got, np.s_[H : 2 * H]), np.delete(want, np.s_[H : 2 * H]))
  bound = np.spacing(np.abs(want[H : 2 * H] - np.float32(1))) / 2
  assert np.all(np.abs(got[H : 2 * H] - want[H : 2 * H]) <= bound)
  tiny = random_params(jaxlstm.lstm_init, 1, 1, seed=11)  # I = H = 1
  tiny = tiny._replace(b=tiny.b.at[1].set(2.0))
  assert_trees_equal(from_haiku(to_haiku(tiny)), tiny)
  relu = random_params(jaxlstm.rnn_init, I, H, activation="relu", seed=7)
  for double_bias in (True, False):
    assert_trees_equal(from_haiku(to_haiku(relu, double_bias=double_bias)), relu)
  assert "b" not in to_haiku(relu, double_bias=False)["vanilla_rnn/linear_1"]
  assert set(to_haiku(relu, name="model/rnn")) == {"model/rnn/linear", "model/rnn/linear_1"}
  # bfloat16 and float64 keep their dtype.
  for dtype in (jnp.bfloat16, jnp.float64):
    p = random_params(jaxlstm.lstm_init, I, H, dtype=dtype, seed=8)
    p = p._replace(b=p.b.at[H : 2 * H].set(1))
    assert_trees_equal(from_haiku(to_haiku(p)), p)


def test_whole_dict_entry_and_name():
  """A core inside a module of the user's, the core's own entry, and a dict of several cores."""
  f, hk_params = make("lstm", wrap=True)
  assert list(hk_params) == ["model/lstm/linear"]
  p = from_haiku(hk_params)
  assert_trees_equal(from_haiku(hk_params, name="model/lstm"), p)
  assert_trees_equal(from_haiku(hk_params["model/lstm/linear"]), p)
  xs, state = normal((T, B, I), seed=1), initial_state("lstm")
  ys, _ = jax.jit(f.apply)(hk_params, xs, state)
  _, hs = jax.jit(jaxlstm.lstm, static_argnames="time_major")(p, xs, from_haiku_state(state), time_major=True)
  assert rel_err(hs, ys) < TOL
  # Haiku -> ours -> Haiku: the weights bit for bit; the forget bias through b + 1 - 1, within half an ulp of b + 1.
  back, want = to_haiku(p, name="model/lstm")["model/lstm/linear"], hk_params["model/lstm/linear"]
  np.testing.assert_array_equal(back["w"], want["w"])
  f_block = np.s_[2 * H : 3 * H]  # Haiku's third block
  np.testing.assert_array_equal(np.delete(back["b"], f_block), np.delete(want["b"], f_block))
  b_f = np.asarray(want["b"][f_block])
  assert np.all(np.abs(back["b"][f_block] - b_f) <= np.spacing(b_f + np.float32(1)) / 2)
  both = {**hk_params, **make("rnn")[1]}
  with pytest.raises(
    ValueError,
    match=r"params hold several cores, \['model/lstm', 'vanilla_rnn'\]; pass name=, "
    r"the core's module path",
  ):
    from_haiku(both)
  assert from_haiku(both, name="vanilla_rnn").activation == "relu"
  with pytest.raises(
    ValueError,
    match=r"name='lstm' is not a recurrent core of params; its cores are "
    r"\['model/lstm', 'vanilla_rnn'\]",
  ):
    from_haiku(both, name="lstm")


def test_gru_is_refused_both_ways():
  """Haiku's GRU resets h before the recurrent matmul, ours after: not the same function, so no conversion."""
  f = hk.without_apply_rng(hk.transform(lambda x, h: hk.GRU(H)(x, h)))
  gru = jax.eval_shape(f.init, jax.random.key(0), jnp.zeros((B, I), jnp.float32), jnp.zeros((B, H), jnp.float32))
  assert set(gru) == {"gru"} and set(gru["gru"]) == {"w_i", "w_h", "b"}
  why = r"Haiku's GRU resets h before the recurrent matmul, a = tanh\(x W_ia \+ \(r \* h\) W_ha \+ b_a\)"
  with pytest.raises(ValueError, match=r"params\['gru'\] is an hk\.GRU's: " + why):
    from_haiku(gru)
  with pytest.raises(ValueError, match=r"params are an hk\.GRU's: " + why):
    from_haiku(gru["gru"])
  with pytest.raises(
    ValueError,
    match=r"params are GRUParams: " + why + r".*jaxlstm's GRU \(PyTorch's\) resets after "
    r"it.*would need a cell of that formulation, added with jaxlstm\.register_cell",
  ):
    to_haiku(random_params(jaxlstm.gru_init, I, H))


def test_states():
  h, c = jnp.ones((B, H)), jnp.zeros((B, H))
  state = from_haiku_state(hk.LSTMState(hidden=h, cell=c))
  assert isinstance(state, jaxlstm.LSTMState) and state.h is h and state.c is c
  back = to_haiku_state(state)
  assert isinstance(back, hk.LSTMState) and back.hidden is h and back.cell is c
  assert isinstance(from_haiku_state(h), jaxlstm.RNNState) and to_haiku_state(jaxlstm.RNNState(h)) is h


def test_errors():
  with pytest.raises(
    TypeError,
    match=r"params must be a Haiku params dict \(what transformed\.init returns\); got "
    r"LSTMParams",
  ):
    from_haiku(random_params(jaxlstm.lstm_init, I, H))
  with pytest.raises(
    ValueError,
    match=r"params hold no hk\.LSTM, hk\.VanillaRNN or hk\.GRU; pass name=.*got "
    r"modules \['mlp/~/linear_0'\]",
  ):
    from_haiku({"mlp/~/linear_0": {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}})
  with pytest.raises(ValueError, match=r"params\['lstm/linear'\] must hold 'b'; got keys \['w'\]"):
    from_haiku({"lstm/linear": {"w": jnp.zeros((7, 16))}})
  with pytest.raises(
    ValueError,
    match=r"params must be an hk\.LSTM's linear, w \(I\+H, 4H\) and b \(4H,\) with "
    r"I >= 1; got w \(4, 16\) and b \(16,\)",
  ):
    from_haiku({"w": jnp.zeros((4, 16)), "b": jnp.zeros(16)})
  with pytest.raises(
    ValueError,
    match=r"params must be a Haiku params dict, or an hk\.LSTM's linear entry "
    r"\{'w', 'b'\}; got keys \['kernel'\]",
  ):
    from_haiku({"kernel": jnp.zeros((3, 4))})
  _, rnn = make("rnn")
  bad = {**rnn, "vanilla_rnn/linear_1": {"w": jnp.zeros((H, H + 1))}}
  with pytest.raises(
    ValueError,
    match=r"params\['vanilla_rnn/linear_1'\]\['w'\] must have shape \(4, 4\) \(the "
    r"hk\.VanillaRNN's recurrent weights\); got \(4, 5\)",
  ):
    from_haiku(bad)
  with pytest.raises(
    ValueError,
    match=r"params\.activation is 'tanh' but hk\.VanillaRNN has activation='relu'; "
    r"build the peer with activation='tanh'",
  ):
    to_haiku(random_params(jaxlstm.rnn_init, I, H))
  with pytest.raises(ValueError, match=r"params\.layer_norm must be None: hk\.LSTM has no layer normalization"):
    to_haiku(random_params(jaxlstm.lstm_init, I, H, layer_norm=True))
  with pytest.raises(
    TypeError,
    match=r"params must be LSTMParams \(for an hk\.LSTM\) or RNNParams \(for an "
    r"hk\.VanillaRNN\); got MinGRUParams",
  ):
    to_haiku(random_params(jaxlstm.mingru_init, I, H))
  with pytest.raises(TypeError, match=r"got tuple \(a stack tuple was given where one layer's params were expected\)"):
    to_haiku((random_params(jaxlstm.lstm_init, I, H),))
  lstm = random_params(jaxlstm.lstm_init, I, H)
  with pytest.raises(
    TypeError,
    match=r"params\.w_h has dtype float64 but hk\.LSTM \(params in params\.w_x's "
    r"dtype\) holds float32",
  ):
    to_haiku(lstm._replace(w_h=np.asarray(lstm.w_h, np.float64)))
  with pytest.raises(
    TypeError,
    match=r"state must be an hk\.LSTMState or an hk\.VanillaRNN's array h; got "
    r"LSTMState",
  ):
    from_haiku_state(jaxlstm.LSTMState(jnp.zeros(H), jnp.zeros(H)))
  with pytest.raises(TypeError, match=r"state must be LSTMState or RNNState; got GRUState"):
    to_haiku_state(jaxlstm.GRUState(jnp.zeros(H)))
