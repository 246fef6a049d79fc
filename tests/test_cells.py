"""Each cell step against the float64 NumPy reference, and the initializers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from tests import reference as ref
from tests.helpers import TOL, normal, random_params, rel_err

LSTM_VARIANTS = {
  "plain": {},
  "peephole": {"peephole": True},
  "layer_norm": {"layer_norm": True},
  "proj": {"proj_size": 2},
  "all": {"peephole": True, "layer_norm": True, "proj_size": 2},
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("variant", list(LSTM_VARIANTS))
@pytest.mark.parametrize("H", [1, 5])
def test_lstm_step_matches_reference(variant, dtype, H):
  opts = dict(LSTM_VARIANTS[variant])
  if "proj_size" in opts and H == 1:
    pytest.skip("proj_size must be below hidden_size")
  params = random_params(jaxlstm.lstm_init, 3, H, dtype=dtype, **opts)
  B, P = 4, params.output_size
  x = normal((B, 3), dtype, seed=1)
  state = jaxlstm.LSTMState(normal((B, P), dtype, seed=2), normal((B, H), dtype, seed=3))
  new, y = jax.jit(jaxlstm.lstm_step)(params, state, x)
  p = ref.to_numpy(params)
  for b in range(B):
    (h_ref, c_ref), y_ref = ref.lstm_cell(
      p, np.asarray(state.h[b], np.float64), np.asarray(state.c[b], np.float64), np.asarray(x[b], np.float64)
    )
    assert rel_err(new.h[b], h_ref) <= TOL[jnp.dtype(dtype)]
    assert rel_err(new.c[b], c_ref) <= TOL[jnp.dtype(dtype)]
    assert rel_err(y[b], y_ref) <= TOL[jnp.dtype(dtype)]
  assert new.h.dtype == dtype and new.c.dtype == dtype and y.shape == (B, P)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("H", [1, 6])
def test_gru_step_matches_pytorch_semantics(dtype, H):
  params = random_params(jaxlstm.gru_init, 3, H, dtype=dtype, scale=1.0)
  x = normal((4, 3), dtype, seed=1)
  h = normal((4, H), dtype, seed=2)
  new, y = jax.jit(jaxlstm.gru_step)(params, jaxlstm.GRUState(h), x)
  p = ref.to_numpy(params)
  gap = 0.0
  for b in range(4):
    (h_ref,), _ = ref.gru_cell(p, np.asarray(h[b], np.float64), np.asarray(x[b], np.float64))
    assert rel_err(new.h[b], h_ref) <= TOL[jnp.dtype(dtype)]
    # b_hn sits inside r * (...): the other placement is a different function.
    outside = ref.gru_cell_bias_outside(p, np.asarray(h[b], np.float64), np.asarray(x[b], np.float64))
    gap = max(gap, np.max(np.abs(np.asarray(new.h[b], np.float64) - outside)))
  assert gap > 1e-3
  np.testing.assert_array_equal(new.h, y)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_rnn_step_matches_reference(activation, dtype):
  params = random_params(jaxlstm.rnn_init, 3, 5, dtype=dtype, scale=1.0, activation=activation)
  x = normal((4, 3), dtype, seed=1)
  h = normal((4, 5), dtype, seed=2)
  new, _ = jax.jit(jaxlstm.rnn_step)(params, jaxlstm.RNNState(h), x)
  p = ref.to_numpy(params)
  for b in range(4):
    (h_ref,), _ = ref.rnn_cell(p, np.asarray(h[b], np.float64), np.asarray(x[b], np.float64), activation)
    assert rel_err(new.h[b], h_ref) <= TOL[jnp.dtype(dtype)]
  if activation == "relu":
    assert float(jnp.min(new.h)) == 0.0


def test_gru_against_torch():
  torch = pytest.importorskip("torch", reason="torch is not installed (extra 'test')")
  cell = torch.nn.GRUCell(3, 4).double()
  w_ih, w_hh = cell.weight_ih.detach().numpy(), cell.weight_hh.detach().numpy()
  b_ih, b_hh = cell.bias_ih.detach().numpy(), cell.bias_hh.detach().numpy()
  H = 4
  params = jaxlstm.GRUParams(
    w_x=jnp.asarray(w_ih.T),
    w_h=jnp.asarray(w_hh.T),
    b=jnp.asarray(np.concatenate([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H :]])),
    b_hn=jnp.asarray(b_hh[2 * H :]),
  )
  x = np.random.default_rng(0).normal(size=(5, 3))
  h = np.random.default_rng(1).normal(size=(5, 4))
  expected = cell(torch.from_numpy(x), torch.from_numpy(h)).detach().numpy()
  new, _ = jaxlstm.gru_step(params, jaxlstm.GRUState(jnp.asarray(h)), jnp.asarray(x))
  np.testing.assert_allclose(new.h, expected, rtol=1e-12, atol=1e-12)


def test_lstm_against_torch_cell():
  torch = pytest.importorskip("torch", reason="torch is not installed (extra 'test')")
  cell = torch.nn.LSTMCell(3, 4).double()
  params = jaxlstm.LSTMParams(
    w_x=jnp.asarray(cell.weight_ih.detach().numpy().T),
    w_h=jnp.asarray(cell.weight_hh.detach().numpy().T),
    b=jnp.asarray((cell.bias_ih + cell.bias_hh).detach().numpy()),
  )
  rng = np.random.default_rng(0)
  x, h, c = rng.normal(size=(5, 3)), rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  h_t, c_t = cell(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
  new, _ = jaxlstm.lstm_step(params, jaxlstm.LSTMState(jnp.asarray(h), jnp.asarray(c)), jnp.asarray(x))
  np.testing.assert_allclose(new.h, h_t.detach().numpy(), rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(new.c, c_t.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch_shape", [(), (1,), (2, 3)])
def test_any_leading_batch_dims(batch_shape):
  params = random_params(jaxlstm.lstm_init, 3, 4, peephole=True)
  x = normal((*batch_shape, 3))
  state = jaxlstm.LSTMState(normal((*batch_shape, 4), seed=1), normal((*batch_shape, 4), seed=2))
  new, y = jaxlstm.lstm_step(params, state, x)
  assert y.shape == (*batch_shape, 4) and new.c.shape == (*batch_shape, 4)
  flat_new, _ = jaxlstm.lstm_step(params, jax.tree_util.tree_map(lambda a: a.reshape(-1, 4), state), x.reshape(-1, 3))
  np.testing.assert_allclose(y.reshape(-1, 4), flat_new.h, rtol=1e-6, atol=1e-7)


def test_peephole_output_gate_reads_new_cell_state():
  # Zero weights except the output peephole: o = sigmoid(p_o * c_t). With
  # c_{t-1} = 0 and the candidate saturated, c_t = i * g != 0, so h reveals
  # whether the output gate saw c_t (Gers 2002) or c_{t-1} = 0 (o = 1/2).
  H = 1
  params = jaxlstm.LSTMParams(
    w_x=jnp.zeros((1, 4), jnp.float64),
    w_h=jnp.zeros((1, 4), jnp.float64),
    b=jnp.array([10.0, 0.0, 10.0, 0.0]),
    peephole=jnp.array([[0.0], [0.0], [5.0]]),
  )
  new, h = jaxlstm.lstm_step(params, jaxlstm.lstm_zero_state(params, (), jnp.float64), jnp.zeros((H,)))
  c_t = float(new.c[0])
  assert c_t > 0.99
  np.testing.assert_allclose(h, ref.sigmoid(5.0 * c_t) * np.tanh(c_t), rtol=1e-12)


def test_lstm_init_layout():
  H, I = 8, 3
  params = jaxlstm.lstm_init(jax.random.key(0), I, H, forget_bias=2.5, peephole=True, layer_norm=True)
  assert params.w_x.shape == (I, 4 * H) and params.w_h.shape == (H, 4 * H) and params.b.shape == (4 * H,)
  assert params.peephole.shape == (3, H) and params.w_proj is None
  # Gate order i, f, g, o: only the second block carries the forget bias.
  np.testing.assert_array_equal(params.b, np.concatenate([np.zeros(H), np.full(H, 2.5), np.zeros(2 * H)]))
  limit = np.sqrt(6.0 / (I + 4 * H))
  assert np.max(np.abs(params.w_x)) <= limit and np.max(np.abs(params.w_x)) > 0.5 * limit
  # Orthogonal per gate block, so the whole (H, 4H) matrix is not orthogonal.
  w = np.asarray(params.w_h, np.float64)
  for k in range(4):
    blk = w[:, k * H : (k + 1) * H]
    np.testing.assert_allclose(blk.T @ blk, np.eye(H), atol=1e-5)
  np.testing.assert_allclose(w @ w.T, 4 * np.eye(H), atol=1e-4)
  ln = params.layer_norm
  np.testing.assert_array_equal(ln.x_scale, 1.0)
  np.testing.assert_array_equal(ln.c_bias, 0.0)


def test_lstm_init_projection_and_dtype():
  params = jaxlstm.lstm_init(jax.random.key(0), 3, 8, proj_size=2, dtype=jnp.bfloat16)
  assert params.w_h.shape == (2, 32) and params.w_proj.shape == (8, 2)
  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree_util.tree_leaves(params))
  # (P, H) blocks with P < H: orthonormal rows.
  blk = np.asarray(params.w_h[:, :8], np.float64)
  np.testing.assert_allclose(blk @ blk.T, np.eye(2), atol=2e-2)
  # The carry of bfloat16 params stays float32.
  state = jaxlstm.lstm_zero_state(params, (3,))
  assert state.h.dtype == jnp.float32 and state.c.dtype == jnp.float32 and state.h.shape == (3, 2)


def test_gru_and_rnn_init():
  g = jaxlstm.gru_init(jax.random.key(0), 3, 4)
  assert g.w_x.shape == (3, 12) and g.w_h.shape == (4, 12) and g.b.shape == (12,) and g.b_hn.shape == (4,)
  r = jaxlstm.rnn_init(jax.random.key(0), 3, 4)
  assert r.w_x.shape == (3, 4) and r.w_h.shape == (4, 4) and r.b.shape == (4,)
  np.testing.assert_allclose(np.asarray(r.w_h).T @ np.asarray(r.w_h), np.eye(4), atol=1e-5)
