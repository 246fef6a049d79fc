"""Equinox interop: converted weights reproduce eqx.nn.LSTMCell and GRUCell, their sequences and gradients.

The oracle is the real Equinox cell, vmapped over the batch and scanned over
time, on random weights; the comparisons are in float32 within 1e-5 relative
error. Equinox's weight gradients come back as a cell, which
:func:`from_equinox` maps into our layout.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

eqx = pytest.importorskip("equinox", reason="Equinox is the oracle for jaxlstm.interop.equinox")

import jaxlstm  # noqa: E402
from jaxlstm.interop.equinox import from_equinox, from_equinox_state, to_equinox, to_equinox_state  # noqa: E402
from tests.helpers import assert_trees_equal, normal, random_params, rel_err  # noqa: E402

B, T, I, H = 3, 5, 3, 4
TOL = 1e-5
LENGTHS = np.array([5, 2, 4])
CELLS = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}
LAYERS = {eqx.nn.LSTMCell: jaxlstm.lstm, eqx.nn.GRUCell: jaxlstm.gru}


def make(name, use_bias=True, seed=0, scale=0.5):
  """An Equinox cell with N(0, scale²) weights everywhere, so that no init pattern hides a bug."""
  cell = CELLS[name](I, H, use_bias=use_bias, dtype=jnp.float32, key=jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype), cell)


def eqx_unroll(cell, xs, hidden):
  """Equinox's own recipe: the cell vmapped over the batch, scanned over time; ``xs (T, B, I)``."""
  step = jax.vmap(cell)

  def body(hidden, x):
    hidden = step(x, hidden)
    return hidden, hidden[0] if isinstance(hidden, tuple) else hidden

  return jax.lax.scan(body, hidden, xs)


def assert_close(got, want, what, record):
  got, want = jax.tree.leaves(got), jax.tree.leaves(want)
  assert len(got) == len(want), f"{what}: {len(got)} arrays, expected {len(want)}"
  for i, (a, b) in enumerate(zip(got, want)):
    err = rel_err(a, b)
    record.append(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))))
    assert err < TOL, f"{what} (array {i}): relative error {err:.2e}"


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("name", list(CELLS))
def test_sequence_parity(name, use_bias):
  """Outputs, final state and the gradients for the weights, the initial state and the inputs, over T steps."""
  cell = make(name, use_bias)
  params = from_equinox(cell)
  xs = normal((T, B, I), seed=1)
  hidden = (normal((B, H), seed=2), normal((B, H), seed=3)) if name == "lstm" else normal((B, H), seed=2)
  r, s = normal((T, B, H), seed=4), normal((B, H), seed=5)

  def eqx_loss(cell, hidden, xs):
    final, ys = eqx_unroll(cell, xs, hidden)
    final = from_equinox_state(final, cell)
    return jnp.sum(ys * r) + jnp.sum(final.h * s), (final, ys)

  def our_loss(params, state, xs):
    final, ys = LAYERS[type(cell)](params, xs, state, time_major=True)
    return jnp.sum(ys * r) + jnp.sum(final.h * s), (final, ys)

  grad = (0, 1, 2)
  (e_gw, e_gh, e_gx), (e_final, e_ys) = jax.jit(jax.grad(eqx_loss, grad, has_aux=True))(cell, hidden, xs)
  (o_gp, o_gs, o_gx), (o_final, o_ys) = jax.jit(jax.grad(our_loss, grad, has_aux=True))(
    params, from_equinox_state(hidden, cell), xs
  )
  diffs = []
  assert_close(o_ys, e_ys, "outputs", diffs)
  assert_close(o_final, e_final, "final state", diffs)
  assert_close(o_gx, e_gx, "d/dxs", diffs)
  assert_close(to_equinox_state(o_gs), e_gh, "d/dstate", diffs)
  if not use_bias:  # our biases exist and get gradients; Equinox's cell has none to compare with
    o_gp = o_gp._replace(b=jnp.zeros_like(o_gp.b), **({"b_hn": jnp.zeros_like(o_gp.b_hn)} if name == "gru" else {}))
  assert_close(o_gp, from_equinox(e_gw), "d/dweights", diffs)
  print(f"{name} use_bias={use_bias}: max abs difference {max(diffs):.2e}")


def test_lengths_match_the_cell_run_up_to_each_length():
  """``lengths`` gives each row's state at its last valid step, what the cell gives on the row cut to its length."""
  cell = make("lstm", seed=6)
  xs = normal((B, T, I), seed=7)
  final, hs = jaxlstm.lstm(from_equinox(cell), xs, lengths=jnp.asarray(LENGTHS))
  step = eqx.filter_jit(cell)  # one unbatched step, compiled once for every row and length
  xs, hs = np.asarray(xs), np.asarray(hs)  # NumPy indexing compiles nothing
  for b, n in enumerate(LENGTHS):
    h, c = jnp.zeros(H, jnp.float32), jnp.zeros(H, jnp.float32)
    for t in range(n):
      h, c = step(xs[b, t], (h, c))
      np.testing.assert_allclose(hs[b, t], h, rtol=TOL, atol=1e-6)
    np.testing.assert_allclose(final.h[b], h, rtol=TOL, atol=1e-6)
    np.testing.assert_allclose(final.c[b], c, rtol=TOL, atol=1e-6)


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("name", list(CELLS))
def test_round_trips_are_exact(name, use_bias):
  cell = make(name, use_bias, seed=8)
  back = to_equinox(from_equinox(cell), use_bias=use_bias)
  assert type(back) is type(cell) and back.use_bias == use_bias and back.hidden_size == H and back.input_size == I
  assert_trees_equal(back, cell)  # the very same cell, bit for bit
  init = {"lstm": jaxlstm.lstm_init, "gru": jaxlstm.gru_init}[name]
  params = random_params(init, I, H, seed=9)
  if not use_bias:
    params = params._replace(
      b=jnp.zeros_like(params.b), **({"b_hn": jnp.zeros_like(params.b_hn)} if name == "gru" else {})
    )
  assert_trees_equal(from_equinox(to_equinox(params, use_bias=use_bias)), params)
  tiny = random_params(init, 1, 1, seed=10)  # I = H = 1
  assert_trees_equal(from_equinox(to_equinox(tiny)), tiny)


def test_layout_and_dtypes():
  """Pin the layouts: weights transposed, gates as ours, the GRU's bias_n is b_hn; dtypes kept, float64 too."""
  cell = make("gru")
  p = from_equinox(cell)
  np.testing.assert_array_equal(p.w_x, cell.weight_ih.T)
  np.testing.assert_array_equal(p.w_h[:, H : 2 * H], cell.weight_hh[H : 2 * H].T)
  np.testing.assert_array_equal(p.b, cell.bias)
  np.testing.assert_array_equal(p.b_hn, cell.bias_n)
  no_bias = from_equinox(make("lstm", use_bias=False))
  assert no_bias.b.shape == (4 * H,) and not np.any(no_bias.b)
  p64 = random_params(jaxlstm.lstm_init, I, H, dtype=jnp.float64)
  c64 = to_equinox(p64)
  assert c64.weight_ih.dtype == jnp.float64 and from_equinox(c64).w_x.dtype == jnp.float64
  # The cell is built from shapes only, with nothing left unfilled.
  assert all(isinstance(a, jax.Array) for a in jax.tree.leaves(c64))
  h, c = jnp.ones((B, H)), jnp.zeros((B, H))
  state = from_equinox_state((h, c), c64)
  assert isinstance(state, jaxlstm.LSTMState) and state.h is h and state.c is c
  assert to_equinox_state(state) == (h, c)
  assert to_equinox_state(from_equinox_state(h, cell)) is h


def test_errors():
  lstm = random_params(jaxlstm.lstm_init, I, H)
  with pytest.raises(
    TypeError,
    match=r"cell must be an equinox\.nn\.LSTMCell or equinox\.nn\.GRUCell; got "
    r"equinox\.nn\._linear\.Linear",
  ):
    from_equinox(eqx.nn.Linear(I, H, key=jax.random.key(0)))
  with pytest.raises(
    TypeError,
    match=r"params must be LSTMParams or GRUParams for an equinox\.nn\.LSTMCell or "
    r"equinox\.nn\.GRUCell; got RNNParams",
  ):
    to_equinox(random_params(jaxlstm.rnn_init, I, H))
  with pytest.raises(
    TypeError,
    match=r"got tuple \(a stack tuple was given where one layer's params were "
    r"expected\)",
  ):
    to_equinox((lstm,))
  with pytest.raises(ValueError, match=r"params\.peephole must be None: equinox\.nn\.LSTMCell has no peephole"):
    to_equinox(random_params(jaxlstm.lstm_init, I, H, peephole=True))
  with pytest.raises(
    ValueError,
    match=r"params\.w_proj must be None: equinox\.nn\.LSTMCell has no output "
    r"projection",
  ):
    to_equinox(random_params(jaxlstm.lstm_init, I, H, proj_size=2))
  with pytest.raises(ValueError, match=r"params\.b must be all zeros because the Equinox cell has use_bias=False"):
    to_equinox(lstm, use_bias=False)
  gru = random_params(jaxlstm.gru_init, I, H)
  with pytest.raises(
    ValueError,
    match=r"params\.b_hn must be all zeros because the Equinox cell has "
    r"use_bias=False",
  ):
    to_equinox(gru._replace(b=jnp.zeros_like(gru.b)), use_bias=False)
  with pytest.raises(
    TypeError,
    match=r"params\.b has dtype float64 but equinox\.nn\.LSTMCell \(built in "
    r"params\.w_x's dtype\) holds float32",
  ):
    to_equinox(lstm._replace(b=np.asarray(lstm.b, np.float64)))
  with pytest.raises(ValueError, match=r"params\.w_h must have shape \(4, 16\); got \(5, 16\)"):
    to_equinox(lstm._replace(w_h=jnp.zeros((H + 1, 4 * H))))
  with pytest.raises(TypeError, match=r"hidden must be Equinox's LSTM state \(h, c\); got ArrayImpl"):
    from_equinox_state(jnp.zeros(H), make("lstm"))
  with pytest.raises(TypeError, match=r"hidden must be one array h for an equinox GRUCell; got a tuple"):
    from_equinox_state((jnp.zeros(H),), make("gru"))
  with pytest.raises(TypeError, match=r"state must be LSTMState or GRUState; got RNNState"):
    to_equinox_state(jaxlstm.RNNState(jnp.zeros(H)))
