"""Recurrent regularizers: variational dropout, zoneout and weight drop, by their definitions.

The masks are redrawn here from the documented key derivation (:mod:`jaxlstm.regularizers`) with
``jax.random`` itself, then the layer is compared with a float64 NumPy loop written from the papers'
equations, with explicit per-gate blocks. Keras is the oracle for the per-gate masks of
``recurrent_dropout``: its own masks are replaced by the same arrays.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import jaxlstm  # noqa: E402
import jaxlstm.linen  # noqa: E402
import jaxlstm.nnx  # noqa: E402
from tests import reference as ref  # noqa: E402
from tests.helpers import normal, random_params  # noqa: E402

B, T, I, H = 3, 6, 4, 5
F64 = jnp.float64
INITS = {"lstm": jaxlstm.lstm_init, "gru": jaxlstm.gru_init, "rnn": jaxlstm.rnn_init}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def keys_of(key):
  """The four keys of one layer call: input, recurrent, zoneout, weight (the documented derivation)."""
  return jax.random.split(key, 4)


def dropout_mask(key, rate, shape):
  return np.asarray(jax.random.bernoulli(key, 1.0 - rate, shape), np.float64) / (1.0 - rate)


def blocks(w, G):
  n = w.shape[-1] // G
  return [w[..., g * n : (g + 1) * n] for g in range(G)]


def gated_cell(cell, p, state, x, mx, mh):
  """One step of ``cell`` by its equations, gate block ``g`` reading ``x * mx[g]`` and ``h * mh[g]``."""
  G = GATES[cell]
  h = state[0]
  zx = [(x * mx[g]) @ w for g, w in enumerate(blocks(p["w_x"], G))]
  zh = [(h * mh[g]) @ u for g, u in enumerate(blocks(p["w_h"], G))]
  b = blocks(p["b"], G)
  if cell == "lstm":
    c = state[1]
    i, f, g, o = (zx[k] + zh[k] + b[k] for k in range(4))
    c = ref.sigmoid(f) * c + ref.sigmoid(i) * np.tanh(g)
    h = ref.sigmoid(o) * np.tanh(c)
    return (h, c), h
  if cell == "gru":  # PyTorch's GRU: b_hn inside the reset product; the carried h is not dropped
    r = ref.sigmoid(zx[0] + b[0] + zh[0])
    z = ref.sigmoid(zx[1] + b[1] + zh[1])
    n = np.tanh(zx[2] + b[2] + r * (zh[2] + p["b_hn"]))
    h = (1 - z) * n + z * h
    return (h,), h
  h = np.tanh(zx[0] + zh[0] + b[0])
  return (h,), h


def run_rows(step, xs):
  """``step(b, state, t, x) -> (state, y)`` over each row of ``xs (B, T, I)`` from zeros."""
  outs = []
  for b in range(xs.shape[0]):
    state = None
    ys = []
    for t in range(xs.shape[1]):
      state, y = step(b, state, t, xs[b, t])
      ys.append(y)
    outs.append(np.stack(ys))
  return np.stack(outs)


def zeros_state(cell):
  return (np.zeros(H), np.zeros(H)) if cell == "lstm" else (np.zeros(H),)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("input_dropout", [0.0, 0.3])
def test_recurrent_dropout_masks_each_gate_once_per_sequence(cell, input_dropout):
  params = random_params(INITS[cell], I, H, dtype=F64)
  xs = normal((B, T, I), F64, seed=1)
  key = jax.random.key(7)
  _, hs = jaxlstm.layer(params, xs, input_dropout=input_dropout, recurrent_dropout=0.4, key=key)
  k_in, k_rec, _, _ = keys_of(key)
  G = GATES[cell]
  mx = dropout_mask(k_in, input_dropout, (B, G, I)) if input_dropout else np.ones((B, G, I))
  mh = dropout_mask(k_rec, 0.4, (B, G, H))
  p = ref.to_numpy(params)

  def step(b, state, t, x):
    return gated_cell(cell, p, zeros_state(cell) if state is None else state, x, mx[b], mh[b])

  np.testing.assert_allclose(hs, run_rows(step, np.asarray(xs)), rtol=1e-12, atol=1e-12)
  assert jaxlstm.explain(params, xs, recurrent_dropout=0.4).kernel == "reference"


@pytest.mark.parametrize("impl", ["auto", "reference"])
def test_input_dropout_alone_is_one_mask_per_sequence_on_any_kernel(impl):
  params = random_params(jaxlstm.lstm_init, I, H, dtype=F64)
  xs = normal((B, T, I), F64, seed=2)
  key = jax.random.key(3)
  _, hs = jaxlstm.layer(params, xs, input_dropout=0.5, key=key, impl=impl)
  m = dropout_mask(keys_of(key)[0], 0.5, (B, I))  # the same mask at every step, shared by the gates
  p = ref.to_numpy(params)
  want = np.stack(
    [ref.run(ref.lstm_cell, p, np.asarray(xs[b]) * m[b], (np.zeros(H), np.zeros(H)))[1] for b in range(B)]
  )
  np.testing.assert_allclose(hs, want, rtol=1e-12, atol=1e-12)
  assert jaxlstm.explain(params, xs, input_dropout=0.5, key=key).kernel == "fused"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_weight_drop_is_one_dropconnect_mask_on_w_h(cell):
  params = random_params(INITS[cell], I, H, dtype=F64)
  xs = normal((B, T, I), F64, seed=3)
  key = jax.random.key(4)
  _, hs = jaxlstm.layer(params, xs, weight_drop=0.5, key=key)
  p = ref.to_numpy(params)
  p["w_h"] = p["w_h"] * dropout_mask(keys_of(key)[3], 0.5, p["w_h"].shape)
  fn = ref.lstm_cell if cell == "lstm" else ref.gru_cell
  want = np.stack([ref.run(fn, p, np.asarray(xs[b]), zeros_state(cell))[1] for b in range(B)])
  np.testing.assert_allclose(hs, want, rtol=1e-12, atol=1e-12)


def test_zoneout_keeps_each_unit_with_its_fields_rate_and_evaluates_by_expectation():
  params = random_params(jaxlstm.lstm_init, I, H, dtype=F64)
  xs = normal((B, T, I), F64, seed=4)
  key = jax.random.key(5)
  rates = {"h": 0.3, "c": 0.6}
  _, hs = jaxlstm.layer(params, xs, zoneout=rates, key=key)
  k_h, k_c = jax.random.split(keys_of(key)[2], 2)  # one key per zoned field, in the state's field order
  d_h = np.asarray(jax.random.bernoulli(k_h, 0.3, (B, T, H)))
  d_c = np.asarray(jax.random.bernoulli(k_c, 0.6, (B, T, H)))
  p = ref.to_numpy(params)

  def train_step(b, state, t, x):
    h, c = (np.zeros(H), np.zeros(H)) if state is None else state
    (h_new, c_new), _ = ref.lstm_cell(p, h, c, x)
    h, c = np.where(d_h[b, t], h, h_new), np.where(d_c[b, t], c, c_new)
    return (h, c), h

  np.testing.assert_allclose(hs, run_rows(train_step, np.asarray(xs)), rtol=1e-12, atol=1e-12)

  def eval_step(b, state, t, x):
    h, c = (np.zeros(H), np.zeros(H)) if state is None else state
    (h_new, c_new), _ = ref.lstm_cell(p, h, c, x)
    h, c = 0.3 * h + 0.7 * h_new, 0.6 * c + 0.4 * c_new
    return (h, c), h

  _, hs_eval = jaxlstm.layer(params, xs, zoneout=rates)  # no key: evaluation
  np.testing.assert_allclose(hs_eval, run_rows(eval_step, np.asarray(xs)), rtol=1e-12, atol=1e-12)


def test_zoneout_draws_fresh_masks_each_step_and_the_key_reproduces_them():
  params = random_params(jaxlstm.gru_init, I, H, dtype=F64)
  xs = normal((B, 200, I), F64, seed=5)
  a = jaxlstm.layer(params, xs, zoneout=0.5, key=jax.random.key(1))[1]
  b = jaxlstm.layer(params, xs, zoneout=0.5, key=jax.random.key(1))[1]
  c = jaxlstm.layer(params, xs, zoneout=0.5, key=jax.random.key(2))[1]
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  # A unit that zoned out repeats its previous value exactly: about half of all steps.
  kept = float(np.mean(np.asarray(a[:, 1:] == a[:, :-1])))
  assert 0.45 < kept < 0.55


def test_lengths_reverse_and_resets_apply_to_the_regularized_step():
  params = random_params(jaxlstm.lstm_init, I, H, dtype=F64)
  xs = normal((B, T, I), F64, seed=6)
  lengths = jnp.array([6, 3, 0])
  kw = dict(recurrent_dropout=0.3, zoneout=0.2, key=jax.random.key(0), lengths=lengths)
  state, hs = jaxlstm.layer(params, xs, **kw)
  assert np.all(np.asarray(hs[1, 3:]) == 0) and np.all(np.asarray(hs[2]) == 0)
  np.testing.assert_array_equal(state.h[1], hs[1, 2])
  np.testing.assert_array_equal(state.h[2], np.zeros(H))
  _, hs_rev = jaxlstm.layer(params, xs, reverse=True, **kw)
  assert np.all(np.asarray(hs_rev[1, 3:]) == 0)
  resets = jnp.zeros((B, T), bool).at[:, 3].set(True)
  _, hs_reset = jaxlstm.layer(params, xs, resets=resets, recurrent_dropout=0.3, key=jax.random.key(0))
  assert hs_reset.shape == (B, T, H)


def test_regularized_layer_under_jit_vmap_and_grad():
  params = random_params(jaxlstm.lstm_init, I, H, dtype=F64)
  xs = normal((2, 3, I), F64, seed=7)
  key = jax.random.key(2)

  def loss(params, xs):
    _, hs = jaxlstm.layer(
      params, xs, input_dropout=0.2, recurrent_dropout=0.3, zoneout={"c": 0.4}, weight_drop=0.25, key=key
    )
    return jnp.sum(hs**2)

  np.testing.assert_allclose(jax.jit(loss)(params, xs), loss(params, xs), rtol=1e-12)
  check_grads(loss, (params, xs), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
  batched = jax.vmap(loss, in_axes=(None, 0))(params, xs[None].repeat(2, 0))
  np.testing.assert_allclose(batched, [loss(params, xs)] * 2, rtol=1e-12)


def test_stack_gives_each_layer_and_direction_its_own_key():
  params = random_params(
    lambda k, i, h, **kw: jaxlstm.stack_init(k, i, h, 2, cell="gru", bidirectional=True, **kw), I, H, dtype=F64
  )
  xs = normal((B, T, I), F64, seed=8)
  key = jax.random.key(9)
  reg = dict(recurrent_dropout=0.3, zoneout=0.1, input_dropout=0.2)
  _, hs = jaxlstm.stack(params, xs, key=key, **reg)
  keys = jax.random.split(jax.random.fold_in(key, 1), (2, 2))
  h = xs
  for i, layer in enumerate(params):
    _, fw = jaxlstm.layer(layer.forward, h, key=keys[i][0], **reg)
    _, bw = jaxlstm.layer(layer.backward, h, reverse=True, key=keys[i][1], **reg)
    h = jnp.concatenate([fw, bw], -1)
  np.testing.assert_array_equal(hs, h)
  # Dropout between layers draws the masks it drew before the regularizers existed.
  plain = jaxlstm.stack(params, xs, dropout=0.5, key=key)[1]
  _, l0 = jaxlstm.stack(params[:1], xs)
  m = jax.random.bernoulli(jax.random.split(key, 2)[0], 0.5, l0.shape)
  np.testing.assert_array_equal(plain, jaxlstm.stack(params[1:], jnp.where(m, l0 / 0.5, 0.0))[1])


def test_errors_name_the_option():
  lstm = jaxlstm.lstm_init(jax.random.key(0), I, H)
  xs = jnp.ones((B, T, I), jnp.float32)
  with pytest.raises(ValueError, match=r"recurrent_dropout=0.2 needs key"):
    jaxlstm.layer(lstm, xs, recurrent_dropout=0.2)
  with pytest.raises(ValueError, match=r"weight_drop must be a rate in \[0, 1\); got 1.5"):
    jaxlstm.layer(lstm, xs, weight_drop=1.5, key=jax.random.key(0))
  with pytest.raises(ValueError, match=r"zoneout names state fields \['n'\]"):
    jaxlstm.layer(lstm, xs, zoneout={"n": 0.1})
  with pytest.raises(ValueError, match=r"impl='fused' cannot run this layer: zoneout acts inside the time loop"):
    jaxlstm.layer(lstm, xs, zoneout=0.1, impl="fused")
  with pytest.raises(ValueError, match=r"recurrent_dropout needs a cell .* mingru layer"):
    jaxlstm.layer(jaxlstm.mingru_init(jax.random.key(0), I, H), xs, recurrent_dropout=0.1, key=jax.random.key(0))
  with pytest.raises(ValueError, match=r"weight_drop drops the recurrent weights w_h; params is a slstm layer"):
    jaxlstm.layer(jaxlstm.slstm_init(jax.random.key(0), I, 4), xs, weight_drop=0.1, key=jax.random.key(0))
  with pytest.raises(ValueError, match=r"input_dropout=0.1 needs key"):
    jaxlstm.stack(jaxlstm.stack_init(jax.random.key(0), I, H, 2), xs, input_dropout=0.1)


def test_flax_modules_carry_the_rates_and_evaluate_deterministically():
  xs = normal((B, T, I), jnp.float32, seed=9)
  reg = dict(recurrent_dropout=0.3, zoneout={"c": 0.5}, weight_drop=0.2)
  model = jaxlstm.nnx.Stack(I, H, num_layers=1, cell="lstm", rngs=nnx.Rngs(0), **reg)
  key = nnx.Rngs(dropout=3)["dropout"]()
  got = model(xs, rngs=nnx.Rngs(dropout=3))
  np.testing.assert_array_equal(got, jaxlstm.stack(model.params, xs, key=key, **reg)[1])
  model.eval()
  np.testing.assert_array_equal(model(xs), jaxlstm.stack(model.params, xs, zoneout={"c": 0.5})[1])

  module = jaxlstm.linen.Stack(H, num_layers=1, **reg)
  variables = module.init(jax.random.key(0), xs, deterministic=True)
  params = jaxlstm.linen.from_variables(variables)
  np.testing.assert_array_equal(
    module.apply(variables, xs, deterministic=True), jaxlstm.stack(params, xs, zoneout={"c": 0.5})[1]
  )
  a = module.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.key(1)})
  b = module.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.key(1)})
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, module.apply(variables, xs, deterministic=True))


@pytest.mark.standard_promotion  # optax promotes dtypes implicitly
def test_fit_with_regularizers_resumes_exactly(tmp_path):
  rng = np.random.default_rng(0)
  data = {"xs": rng.standard_normal((16, T, I)).astype(np.float32), "ys": rng.standard_normal(16).astype(np.float32)}

  def loss_fn(params, batch, key):
    _, hs = jaxlstm.stack(
      params, batch["xs"], key=key, input_dropout=0.1, recurrent_dropout=0.2, zoneout=0.1, weight_drop=0.2
    )
    return jnp.mean((hs[:, -1, 0] - batch["ys"]) ** 2)

  params = jaxlstm.stack_init(jax.random.key(0), I, H, 1)
  whole, _ = jaxlstm.fit(params, loss_fn, data, batch_size=8, steps=6, progress=False)
  first, _ = jaxlstm.fit(
    params, loss_fn, data, batch_size=8, steps=3, progress=False, checkpoint_dir=str(tmp_path), save_every=3
  )
  resumed, _ = jaxlstm.fit(
    params,
    loss_fn,
    data,
    batch_size=8,
    steps=6,
    progress=False,
    checkpoint_dir=str(tmp_path),
    save_every=3,
    resume=True,
  )
  jax.tree.map(np.testing.assert_array_equal, resumed, whole)
  assert not np.allclose(first[0].w_h, whole[0].w_h)


# Keras is the oracle of recurrent_dropout's per-gate masks: its cells draw one mask per gate (its
# implementation 1) through DropoutRNNCell._create_dropout_mask, which is replaced here by the masks
# jaxlstm draws, each moved to Keras' gate order.
KERAS_ORDER = {"lstm": [0, 1, 2, 3], "gru": [1, 0, 2]}  # Keras' gate k is jaxlstm's gate KERAS_ORDER[k]


@pytest.mark.standard_promotion
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_dropout_matches_keras_with_the_same_masks(cell, monkeypatch):
  keras = pytest.importorskip("keras")
  from keras.src.layers.rnn import dropout_rnn_cell

  from jaxlstm.interop.keras import to_keras

  params = random_params(INITS[cell], I, H, dtype=jnp.float32)
  xs = normal((B, T, I), jnp.float32, seed=10)
  key = jax.random.key(11)
  _, hs = jaxlstm.layer(params, xs, input_dropout=0.25, recurrent_dropout=0.4, key=key)
  G = GATES[cell]
  k_in, k_rec, _, _ = keys_of(key)
  mx = dropout_mask(k_in, 0.25, (B, G, I)).astype(np.float32)
  mh = dropout_mask(k_rec, 0.4, (B, G, H)).astype(np.float32)

  def create(self, step_input, rate):
    m = mx if step_input.shape[-1] == I and rate == 0.25 else mh
    return [jnp.asarray(m[:, g]) for g in KERAS_ORDER[cell]]

  monkeypatch.setattr(dropout_rnn_cell.DropoutRNNCell, "_create_dropout_mask", create)
  kind = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
  layer = kind(
    H,
    return_sequences=True,
    dropout=0.25,
    recurrent_dropout=0.4,
    kernel_initializer="zeros",
    recurrent_initializer="zeros",
  )
  to_keras((params,), layer)
  want = np.asarray(layer(np.asarray(xs), training=True))
  np.testing.assert_allclose(hs, want, rtol=1e-5, atol=1e-6)


def test_equinox_stack_carries_the_rates():
  equinox_shell = pytest.importorskip("jaxlstm.equinox")
  xs = normal((B, T, I), jnp.float32, seed=12)
  reg = dict(input_dropout=0.1, recurrent_dropout=0.3, zoneout={"c": 0.5}, weight_drop=0.2)
  model = equinox_shell.Stack(I, H, key=jax.random.key(0), **reg)
  key = jax.random.key(4)
  np.testing.assert_array_equal(model(xs, key=key), jaxlstm.stack(model.params, xs, key=key, **reg)[1])
  np.testing.assert_array_equal(model(xs, inference=True), jaxlstm.stack(model.params, xs, zoneout={"c": 0.5})[1])
  with pytest.raises(ValueError, match=r"needs key= in the call unless inference=True"):
    model(xs)
