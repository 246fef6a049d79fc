"""The ConvLSTM1D and ConvLSTM2D cells against their oracles.

* a float64 NumPy reference of Shi et al.'s equations with Keras' convolutions, written with explicit
  loops over output positions and kernel taps (no lax);
* the Python-loop unroll of ``tests/oracle.py`` for lengths, masks, resets, reverse and time-major, on
  the step with its spatial axes flattened;
* Keras' ``ConvLSTM1D``/``ConvLSTM2D`` (outputs, states and gradients, return_sequences, return_state,
  go_backwards, masks) and Flax's Linen ``ConvLSTMCell`` on converted weights, round trips exact;
* jit, vmap and finite differences; a stack; both Flax module families; fit with a checkpoint; the CLI.

Sizes are tiny and shapes few, so that the file stays fast.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import jaxlstm  # noqa: E402
from jaxlstm.checkpoint import Checkpointer, CheckpointError  # noqa: E402
from tests.helpers import assert_trees_equal, normal, random_params, rel_err  # noqa: E402
from tests.oracle import python_unroll  # noqa: E402

B, T, C, F = 2, 4, 2, 3


def init(rank, dtype=jnp.float64, seed=0, **opts):
  name = f"convlstm{rank}d"
  return random_params(jaxlstm.get_cell(name).init, C, F, dtype=dtype, seed=seed, **opts)


# ---------------------------------------------------------------- layout


def test_layout_is_pinned():
  p = jaxlstm.convlstm2d_init(jax.random.key(0), C, F, kernel_size=(3, 1), forget_bias=7.0)
  assert p.w_x.shape == (3, 1, C, 4 * F) and p.w_h.shape == (3, 1, F, 4 * F)
  assert list(p.b) == [0.0] * F + [7.0] * F + [0.0] * 2 * F  # gates i, f, g, o: the forget bias is second
  assert jaxlstm.ConvLSTMState._fields == ("h", "c")
  assert jaxlstm.ConvLSTM2DParams._fields == ("w_x", "w_h", "b", "padding", "strides", "dilation", "forget_offset")
  assert jaxlstm.ConvLSTM2DParams.static_fields == ("padding", "strides", "dilation", "forget_offset")
  assert [c.feature_axes for c in map(jaxlstm.get_cell, ("convlstm1d", "convlstm2d"))] == [2, 3]
  # The static fields live in the structure, not the leaves.
  assert len(jax.tree.leaves(p)) == 3
  # Each gate block of w_h, flattened over the kernel taps, has orthonormal columns.
  blk = np.asarray(p.w_h).reshape(3 * F, 4 * F)[:, F : 2 * F]
  np.testing.assert_allclose(blk.T @ blk, np.eye(F), atol=1e-5)


# ---------------------------------------------------------------- NumPy reference


def np_conv(x, w, strides, padding, dilation):
  """``x (N, *S, C)`` with ``w (*K, C, O)``, channels last, by explicit loops over outputs and taps."""
  r = w.ndim - 2
  K, S = w.shape[:r], x.shape[1 : 1 + r]
  if padding == "same":
    out = [-(-n // s) for n, s in zip(S, strides)]
    pads = [max((o - 1) * s + d * (k - 1) + 1 - n, 0) for o, s, d, k, n in zip(out, strides, dilation, K, S)]
    x = np.pad(x, [(0, 0)] + [(p // 2, p - p // 2) for p in pads] + [(0, 0)])
  else:
    out = [-(-(n - d * (k - 1)) // s) for n, s, d, k in zip(S, strides, dilation, K)]
  y = np.zeros((x.shape[0], *out, w.shape[-1]))
  for o in np.ndindex(*out):
    for k in np.ndindex(*K):
      idx = tuple(oi * s + ki * d for oi, ki, s, d in zip(o, k, strides, dilation))
      y[(slice(None), *o)] += x[(slice(None), *idx)] @ w[k]
  return y


def np_convlstm(p, xs, h, c):
  """Shi et al.'s equations without peepholes, Keras' convolutions; ``xs (B, T, *S, C)``; float64."""
  sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
  w_x, w_h, b = (np.asarray(a, np.float64) for a in (p.w_x, p.w_h, p.b))
  r = p.rank
  hs = []
  for t in range(xs.shape[1]):
    z = np_conv(xs[:, t], w_x, p.strides, p.padding, p.dilation) + b + np_conv(h, w_h, (1,) * r, "same", (1,) * r)
    i, f, g, o = np.split(z, 4, axis=-1)
    c = sig(f + p.forget_offset) * c + sig(i) * np.tanh(g)
    h = sig(o) * np.tanh(c)
    hs.append(h)
  return h, c, np.stack(hs, 1)


SETTINGS = [
  (1, dict(kernel_size=3)),
  (1, dict(kernel_size=2, padding="valid", dilation=2)),
  (2, dict(kernel_size=(3, 2), padding="valid", strides=(2, 1))),
  (2, dict(kernel_size=2, strides=2, forget_offset=1.0)),
]


@pytest.mark.parametrize("rank,opts", SETTINGS)
def test_layer_matches_the_numpy_reference_in_float64(rank, opts):
  p = init(rank, **opts)
  spatial = (7,) if rank == 1 else (7, 5)
  xs = normal((B, T, *spatial, C), jnp.float64, seed=1)
  state0 = jaxlstm.zero_state(p, (B, *spatial))
  state0 = jax.tree.map(lambda z: normal(z.shape, jnp.float64, seed=2, scale=0.5), state0)
  final, hs = jaxlstm.layer(p, xs, state0)
  h, c, want = np_convlstm(p, np.asarray(xs), np.asarray(state0.h), np.asarray(state0.c))
  assert hs.shape == want.shape and final.h.shape == h.shape
  assert rel_err(hs, want) < 1e-12 and rel_err(final.h, h) < 1e-12 and rel_err(final.c, c) < 1e-12


# ---------------------------------------------------------------- missing data, against the loop

LENGTHS = np.array([4, 1])
MASK = np.array([[1, 0, 1, 1], [1, 1, 0, 0]], bool)
RESETS = np.array([[0, 0, 1, 0], [1, 0, 0, 1]], bool)
CASES = {
  "lengths": {"lengths": LENGTHS},
  "mask_resets": {"mask": MASK, "resets": RESETS},
  "reverse_lengths_mask": {"reverse": True, "lengths": LENGTHS, "mask": MASK},
  "reverse_lengths_resets": {"reverse": True, "lengths": LENGTHS, "resets": RESETS},
  "batch2d_time_major": {"time_major": True, "lengths": np.array([[3, 1], [0, 4]])},
}


def flat_step(p, spatial_in):
  """The step on flattened ``(W * C,)`` inputs and ``(W' * F,)`` state leaves, for the vector-cell oracle."""
  spatial_out = jaxlstm.zero_state(p, spatial_in).h.shape[:-1]

  def step(params, state, x):
    s = jaxlstm.ConvLSTMState(*(a.reshape(*spatial_out, F) for a in state))
    s, y = jaxlstm.convlstm_step(params, s, x.reshape(*spatial_in, C))
    return jaxlstm.ConvLSTMState(*(a.reshape(-1) for a in s)), y.reshape(-1)

  return step, spatial_out


@pytest.mark.parametrize("case", list(CASES))
def test_missing_data_and_reverse_match_the_python_loop(case):
  p = init(1, kernel_size=3, padding="valid", strides=2)
  kw = dict(CASES[case])
  batch = (2, 2) if case == "batch2d_time_major" else (B,)
  W = 7
  xs = normal((*batch, T, W, C), jnp.float64, seed=1)
  state = jax.tree.map(lambda z: normal(z.shape, jnp.float64, seed=2, scale=0.5), jaxlstm.zero_state(p, (*batch, W)))
  choice = jaxlstm.explain(p, jnp.moveaxis(xs, len(batch), 0) if kw.get("time_major") else xs, **kw)
  assert choice.kernel == "reference"
  assert [k for k, why in choice.reasons.items() if why is None] == ["reference"]
  step, out = flat_step(p, (W,))
  flat_state = jax.tree.map(lambda a: a.reshape(*batch, -1), state)
  want_final, want_hs = python_unroll(
    step, p, xs.reshape(*batch, T, W * C), flat_state, **{k: v for k, v in kw.items() if k != "time_major"}
  )
  if kw.get("time_major"):
    xs = jnp.moveaxis(xs, len(batch), 0)
  final, hs = jaxlstm.layer(p, xs, state, **kw)
  if kw.get("time_major"):
    hs = jnp.moveaxis(hs, 0, len(batch))
  assert hs.shape == (*batch, T, *out, F)
  assert rel_err(hs.reshape(*batch, T, -1), want_hs) < 1e-12
  for got, want in zip(final, want_final):
    assert rel_err(got.reshape(*batch, -1), want) < 1e-12


def test_t0_and_reversed_input_equal_reverse():
  p = init(2, kernel_size=2)
  xs = normal((B, T, 4, 3, C), jnp.float64, seed=3)
  final, hs = jaxlstm.layer(p, xs[:, :0])
  assert hs.shape == (B, 0, 4, 3, F) and float(jnp.abs(final.h).max()) == 0.0
  f1, h1 = jaxlstm.layer(p, xs, reverse=True)
  f2, h2 = jaxlstm.layer(p, xs[:, ::-1])
  assert rel_err(h1, h2[:, ::-1]) < 1e-12 and rel_err(f1.c, f2.c) < 1e-12


def test_other_kernels_refuse_it_with_their_reason():
  p = init(2, dtype=jnp.float32)
  xs = normal((B, T, 4, 4, C))
  reasons = jaxlstm.explain(p, xs).reasons
  assert reasons["fused"] == "it runs LSTM layers only, not convlstm2d"
  assert reasons["cudnn"] == "it runs LSTM layers only, not convlstm2d"
  assert "not convlstm2d, whose step is not linear in h" in reasons["parallel"]
  for impl in ("fused", "parallel", "cudnn"):
    with pytest.raises(ValueError, match=f"impl='{impl}' cannot run this layer: .*convlstm2d"):
      jaxlstm.layer(p, xs, impl=impl)


# ---------------------------------------------------------------- entry checks


def test_entry_checks_name_what_is_wrong():
  p = init(2, dtype=jnp.float32, kernel_size=3, padding="valid")
  with pytest.raises(ValueError, match=r"xs must have shape \(\*batch, T, H, W, I\) with I=2; got shape \(2, 4, 2\)"):
    jaxlstm.layer(p, jnp.ones((B, T, C), jnp.float32))
  with pytest.raises(ValueError, match=r"spatial axis 1 has size 2, smaller than the kernel's 3 \(dilated\)"):
    jaxlstm.layer(p, jnp.ones((B, T, 5, 2, C), jnp.float32))
  with pytest.raises(ValueError, match=r"state.h must have shape \(2, 3, 3, 3\); got \(2, 5, 5, 3\)"):
    jaxlstm.layer(p, jnp.ones((B, T, 5, 5, C), jnp.float32), jaxlstm.zero_state(init(2, jnp.float32), (B, 5, 5)))
  with pytest.raises(ValueError, match=r"kernel_size must be a positive int or 2 of them; got \(3, 3, 3\)"):
    jaxlstm.convlstm2d_init(jax.random.key(0), C, F, kernel_size=(3, 3, 3))
  with pytest.raises(ValueError, match=r"padding must be 'same' or 'valid'; got 'causal'"):
    jaxlstm.convlstm1d_init(jax.random.key(0), C, F, padding="causal")
  mixed = (jaxlstm.convlstm1d_init(jax.random.key(0), C, F), jaxlstm.lstm_init(jax.random.key(0), F, F))
  with pytest.raises(
    ValueError,
    match=r"params\[1\] is a lstm layer, whose steps have 1 feature axes, but params\[0\] "
    r"is a convlstm1d layer, with 2",
  ):
    jaxlstm.stack(mixed, jnp.ones((B, T, 5, C), jnp.float32))


# ---------------------------------------------------------------- transformations


def test_jit_vmap_and_finite_differences():
  p = init(1, kernel_size=2, padding="valid", strides=2, scale=0.3)
  xs = normal((B, 3, 5, C), jnp.float64, seed=4)
  f = lambda p, xs: jaxlstm.layer(p, xs, lengths=jnp.array([3, 2]))  # noqa: E731
  want = f(p, xs)
  assert_trees_equal(jax.jit(f)(p, xs), want)
  one = jax.vmap(lambda x: jaxlstm.layer(p, x[None])[1][0])(xs)
  assert rel_err(one, jaxlstm.layer(p, xs)[1]) < 1e-12
  loss = lambda p, xs: jnp.sum(jnp.sin(f(p, xs)[1])) + jnp.sum(f(p, xs)[0].c ** 2)  # noqa: E731
  check_grads(loss, (p, xs), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_bfloat16_params_keep_a_float32_state():
  p = jax.tree.map(lambda a: a.astype(jnp.bfloat16), init(1, jnp.float32))
  final, hs = jaxlstm.layer(p, normal((B, T, 5, C), jnp.bfloat16))
  assert hs.dtype == jnp.bfloat16 and final.c.dtype == jnp.float32
  want = jaxlstm.layer(
    jax.tree.map(lambda a: a.astype(jnp.float32), p), normal((B, T, 5, C), jnp.bfloat16).astype(jnp.float32)
  )[1]
  assert rel_err(hs, want) < 3e-2


def test_bidirectional_stack_of_valid_layers_is_the_layers_composed():
  params = jaxlstm.stack_init(
    jax.random.key(0), C, F, 2, cell="convlstm1d", bidirectional=True, padding="valid", kernel_size=2, dtype=jnp.float64
  )
  assert params[1].forward.input_size == 2 * F
  xs = normal((B, T, 6, C), jnp.float64, seed=5)
  states, hs = jaxlstm.stack(params, xs, lengths=LENGTHS)
  h = xs
  for layer in params:
    fs, fw = jaxlstm.layer(layer.forward, h, lengths=LENGTHS)
    bs, bw = jaxlstm.layer(layer.backward, h, lengths=LENGTHS, reverse=True)
    h = jnp.concatenate([fw, bw], -1)  # the channel axis
  assert hs.shape == (B, T, 4, 2 * F) and rel_err(hs, h) < 1e-12
  assert rel_err(states[-1].backward.c, bs.c) < 1e-12 and states[-1].forward.h.shape == (B, 4, F)


# ---------------------------------------------------------------- Keras

keras = pytest.importorskip("keras") if os.environ.get("KERAS_BACKEND") == "jax" else None


def keras_layer(rank, seed=0, spatial=(6, 5), **kw):
  cls = keras.layers.ConvLSTM1D if rank == 1 else keras.layers.ConvLSTM2D
  layer = cls(F, kernel_initializer="zeros", recurrent_initializer="zeros", **kw)
  layer.build((None, T, *spatial[:rank], C))
  rng = np.random.default_rng(seed)
  for v in layer.weights:
    v.assign(0.4 * rng.standard_normal(tuple(v.shape)).astype(np.float32))
  return layer


KERAS = [
  (2, dict(kernel_size=(3, 2), padding="valid", strides=(2, 1))),
  (2, dict(kernel_size=3, padding="same", dilation_rate=2)),
  (1, dict(kernel_size=3, padding="same", go_backwards=True)),
  (1, dict(kernel_size=2, padding="valid", use_bias=False)),
]


@pytest.mark.standard_promotion  # Keras promotes dtypes implicitly inside its layers
@pytest.mark.parametrize("rank,kw", KERAS)
def test_keras_outputs_states_and_gradients(rank, kw):
  if keras is None or keras.backend.backend() != "jax":
    pytest.skip("needs Keras on its JAX backend")
  layer = keras_layer(rank, return_sequences=True, return_state=True, **kw)
  spatial = (6, 5)[:rank]
  xs = normal((B, T, *spatial, C), seed=6)
  params = jaxlstm.interop.from_keras(layer)
  backwards = kw.get("go_backwards", False)
  run = dict(lengths=None)
  tv = [v.value for v in layer.trainable_variables]
  ntv = [v.value for v in layer.non_trainable_variables]
  r = normal(layer(xs)[0].shape, seed=7)

  def keras_loss(tv, xs):
    (hs, h, c), _ = layer.stateless_call(tv, ntv, xs)
    return jnp.sum(hs * r) + jnp.sum(h**2) + jnp.sum(c), (hs, h, c)

  def our_loss(p, xs):
    final, hs = jaxlstm.layer(p[0], xs, reverse=backwards, **run)
    hs = hs[:, ::-1] if backwards else hs  # Keras returns a go_backwards layer's outputs in reversed time order
    return jnp.sum(hs * r) + jnp.sum(final.h**2) + jnp.sum(final.c), (hs, final.h, final.c)

  (kl, kout), kg = jax.value_and_grad(keras_loss, argnums=(0, 1), has_aux=True)(tv, xs)
  (ol, oout), og = jax.value_and_grad(our_loss, argnums=(0, 1), has_aux=True)(params, xs)
  errs = {}
  for name, a, b in zip(("hs", "h", "c"), oout, kout):
    errs[name] = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
  for v, g in zip(layer.trainable_variables, kg[0]):
    v.assign(g)
  kg_ours = jaxlstm.interop.from_keras(layer)[0]
  for f in ("w_x", "w_h") + (("b",) if kw.get("use_bias", True) else ()):
    errs["d" + f] = rel_err(getattr(og[0][0], f), getattr(kg_ours, f))
  errs["dxs"] = rel_err(og[1], kg[1])
  assert max(errs["hs"], errs["h"], errs["c"]) < 2e-6, errs
  assert max(v for k, v in errs.items() if k.startswith("d")) < 1e-5, errs


@pytest.mark.standard_promotion
def test_keras_masks_round_trip_and_refusals():
  if keras is None or keras.backend.backend() != "jax":
    pytest.skip("needs Keras on its JAX backend")
  layer = keras_layer(2, kernel_size=2, padding="same", return_sequences=True, return_state=True)
  params = jaxlstm.interop.from_keras(layer)
  xs = normal((B, T, 6, 5, C), seed=8)
  # Keras 3's ConvLSTM cannot take a mask (its RNN broadcasts a (B, 1) mask against (B, H, W, F) states and
  # fails), so lengths are checked against Keras on each row cut to its length.
  final, hs = jaxlstm.stack(params, xs, lengths=LENGTHS)
  for b, L in enumerate(LENGTHS):
    hs_k, h_k, c_k = layer(xs[b : b + 1, :L])
    assert float(jnp.abs(final[0].h[b] - h_k[0]).max()) < 2e-6 and float(jnp.abs(final[0].c[b] - c_k[0]).max()) < 2e-6
    assert float(jnp.abs(hs[b, :L] - hs_k[0]).max()) < 2e-6 and float(jnp.abs(hs[b, L:]).sum()) == 0.0
  # ours -> Keras -> ours is exact, and Keras then computes what we do.
  mine = jaxlstm.stack_init(jax.random.key(1), C, F, 1, cell="convlstm2d", kernel_size=2)
  other = keras_layer(2, seed=3, kernel_size=2, padding="same", return_sequences=True)
  back = jaxlstm.interop.from_keras(jaxlstm.interop.to_keras(mine, other))
  assert jax.tree.structure(back) == jax.tree.structure(mine)
  assert_trees_equal(back, mine)
  assert float(jnp.abs(other(xs) - jaxlstm.stack(mine, xs)[1]).max()) < 2e-6
  with pytest.raises(ValueError, match=r"params\[0\].padding is 'valid' but layer.cell has padding='same'"):
    jaxlstm.interop.to_keras(
      jaxlstm.stack_init(jax.random.key(1), C, F, 1, cell="convlstm2d", kernel_size=2, padding="valid"), other
    )
  with pytest.raises(ValueError, match=r"forget_offset is 1.0 but Keras' ConvLSTM adds nothing"):
    jaxlstm.interop.to_keras(
      jaxlstm.stack_init(jax.random.key(1), C, F, 1, cell="convlstm2d", kernel_size=2, forget_offset=1.0), other
    )
  with pytest.raises(ValueError, match=r"layer must be built before params can be written into it"):
    jaxlstm.interop.to_keras(mine, keras.layers.ConvLSTM2D(F, 2, padding="same"))


# ---------------------------------------------------------------- Flax


@pytest.mark.standard_promotion  # Flax promotes implicitly
def test_flax_conv_lstm_cell_outputs_gradients_and_round_trip():
  from flax import linen

  from jaxlstm.interop.flax import from_flax, from_flax_carry, to_flax, to_flax_carry

  cell = linen.ConvLSTMCell(F, (3, 2))
  rnn = linen.RNN(cell)
  xs = normal((B, T, 6, 5, C), seed=9)
  variables = rnn.init(jax.random.key(0), xs)
  variables = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(1), a.shape, a.dtype), variables)
  params = from_flax(rnn, variables)
  assert params.forget_offset == 1.0 and params.padding == "same"
  carry0 = jax.tree.map(lambda a: a + 0.2, cell.initialize_carry(jax.random.key(2), xs[:, 0].shape))
  r = normal((B, T, 6, 5, F), seed=10)

  def flax_loss(v, xs):
    carry, hs = rnn.apply(v, xs, initial_carry=carry0, return_carry=True)
    return jnp.sum(hs * r) + jnp.sum(carry[0] ** 2), (hs, carry)

  def our_loss(p, xs):
    final, hs = jaxlstm.layer(p, xs, from_flax_carry(carry0, cell))
    return jnp.sum(hs * r) + jnp.sum(final.c**2), (hs, to_flax_carry(final))

  (_, (hs_f, carry_f)), g_f = jax.value_and_grad(flax_loss, argnums=(0, 1), has_aux=True)(variables, xs)
  (_, (hs_o, carry_o)), g_o = jax.value_and_grad(our_loss, argnums=(0, 1), has_aux=True)(params, xs)
  assert float(jnp.abs(hs_o - hs_f).max()) < 2e-6
  assert max(float(jnp.abs(a - b).max()) for a, b in zip(carry_o, carry_f)) < 2e-6
  # Flax's two biases get the same gradient, our one b; w_x and w_h are its kernels with the gates reordered.
  g_flax = from_flax(rnn, jax.tree.map(lambda a: a, g_f[0]))
  assert rel_err(g_o[0].w_x, g_flax.w_x) < 1e-5 and rel_err(g_o[0].w_h, g_flax.w_h) < 1e-5
  assert rel_err(2 * g_o[0].b, g_flax.b) < 1e-5 and rel_err(g_o[1], g_f[1]) < 1e-5
  back = from_flax(rnn, to_flax(params, rnn))
  assert jax.tree.structure(back) == jax.tree.structure(params)
  assert_trees_equal(back, params)
  with pytest.raises(ValueError, match=r"params.forget_offset must be 1.0: flax ConvLSTMCell adds 1"):
    to_flax(jaxlstm.convlstm2d_init(jax.random.key(0), C, F, kernel_size=(3, 2)), cell)
  with pytest.raises(ValueError, match=r"cell.padding must be 'SAME'"):
    from_flax(linen.ConvLSTMCell(F, (3,), padding="VALID"), {})
  with pytest.raises(ValueError, match=r"cell.strides must be None or 1"):
    from_flax(linen.ConvLSTMCell(F, (3,), strides=(2,)), {})


# ---------------------------------------------------------------- Flax modules, fit, checkpoints, CLI


def test_flax_modules_run_the_functional_layer_and_stack():
  from flax import nnx

  import jaxlstm.linen
  import jaxlstm.nnx

  xs = normal((B, T, 6, 5, C))
  layer = jaxlstm.nnx.Layer(C, F, cell="convlstm2d", kernel_size=(3, 2), padding="valid", rngs=nnx.Rngs(0))
  assert layer.cell == "convlstm2d" and layer.options["padding"] == "valid"
  np.testing.assert_array_equal(layer(xs, lengths=LENGTHS), jaxlstm.layer(layer.params, xs, lengths=LENGTHS)[1])
  last = layer(xs, return_sequences=False)
  assert last.shape == (B, 4, 4, F)
  stack = jaxlstm.nnx.Stack(C, F, num_layers=2, cell="convlstm2d", bidirectional=True, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(stack(xs), jaxlstm.stack(stack.params, xs)[1])
  cell = jaxlstm.nnx.Cell(C, F, cell="convlstm2d", rngs=nnx.Rngs(0))
  state, y = cell(cell.initial_state((B, 6, 5)), xs[:, 0])
  assert y.shape == (B, 6, 5, F)
  module = jaxlstm.linen.Stack(F, num_layers=2, cell="convlstm2d", options={"kernel_size": 2})
  variables = module.init(jax.random.key(0), xs)
  params = jaxlstm.linen.from_variables(variables)
  assert isinstance(params[1], jaxlstm.ConvLSTM2DParams) and params[1].kernel_size == (2, 2)
  np.testing.assert_array_equal(module.apply(variables, xs), jaxlstm.stack(params, xs)[1])
  one = jaxlstm.linen.Layer(F, cell="convlstm2d")
  v = one.init(jax.random.key(0), xs)
  np.testing.assert_array_equal(one.apply(v, xs), jaxlstm.layer(jaxlstm.linen.from_variables(v), xs)[1])


@pytest.mark.standard_promotion  # optax promotes implicitly
def test_fit_trains_it_and_a_checkpoint_keeps_its_settings(tmp_path):
  key = jax.random.key(0)
  params = {
    "rnn": jaxlstm.stack_init(key, C, F, 1, cell="convlstm1d", kernel_size=3, padding="valid"),
    "head": jnp.zeros((F, 1)),
  }
  rng = np.random.default_rng(0)
  data = {
    "xs": rng.standard_normal((32, T, 6, C)).astype(np.float32),
    "ys": rng.standard_normal((32, 1)).astype(np.float32),
  }

  def loss_fn(p, batch, key):
    states, _ = jaxlstm.stack(p["rnn"], batch["xs"])
    pred = states[-1].h.mean(axis=1) @ p["head"]  # mean over the feature map's positions
    return jnp.mean((pred - batch["ys"]) ** 2)

  trained, history = jaxlstm.fit(
    params, loss_fn, data, steps=4, batch_size=16, checkpoint_dir=str(tmp_path), save_every=2, progress=False
  )
  assert np.isfinite(history[-1]["loss"])
  ckpt = Checkpointer(tmp_path)
  back = ckpt.restore(jaxlstm.init_train_state(params, optax.adam(1e-3)))
  assert_trees_equal(back.params, trained)
  assert back.params["rnn"][0].padding == "valid"
  same = dict(params, rnn=jaxlstm.stack_init(key, C, F, 1, cell="convlstm1d", kernel_size=3))
  with pytest.raises(CheckpointError, match="saved from a model of another structure"):
    ckpt.restore(jaxlstm.init_train_state(same, optax.adam(1e-3)))


def test_cli_refuses_it_for_flat_tasks(tmp_path, capsys):
  from jaxlstm.cli import main

  assert (
    main(["train", "--task", "adding", "--cell", "convlstm2d", "--steps", "1", "--out", str(tmp_path / "a"), "--quiet"])
    == 2
  )
  assert "cell 'convlstm2d' reads sequences of feature maps" in capsys.readouterr().err


def test_generic_scan_takes_a_convolutional_step():
  p = init(2, kernel_size=2, padding="valid")
  xs = normal((B, T, 5, 4, C), jnp.float64, seed=11)
  state = jaxlstm.zero_state(p, (B, 5, 4))
  got = jaxlstm.scan(jaxlstm.convlstm_step, p, xs, state, lengths=LENGTHS, reverse=True, feature_axes=3)
  want = jaxlstm.layer(p, xs, state, lengths=LENGTHS, reverse=True)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert rel_err(a, b) < 1e-12


@pytest.mark.standard_promotion
def test_keras_bidirectional_conv_lstm_concatenates_channels():
  if keras is None or keras.backend.backend() != "jax":
    pytest.skip("needs Keras on its JAX backend")
  layer = keras.layers.Bidirectional(keras.layers.ConvLSTM2D(F, 2, padding="same", return_sequences=True))
  xs = normal((B, T, 6, 5, C), seed=12)
  want = layer(xs)
  params = jaxlstm.interop.from_keras(layer)
  assert isinstance(params[0], jaxlstm.Bidirectional)
  _, hs = jaxlstm.stack(params, xs, **jaxlstm.interop.keras_options(layer))
  assert hs.shape == (B, T, 6, 5, 2 * F) and float(jnp.abs(hs - want).max()) < 2e-6
