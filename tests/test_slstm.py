"""The sLSTM (Beck et al., 2024, xLSTM), against oracles that share no code with it.

* A float64 NumPy reference written from the paper's equations, stabilized, and the unstabilized
  equations (raw ``exp`` gates) where they do not overflow; where they do, the cell stays finite.
* The block-diagonal heads: a head's output never reads another head's recurrent weights.
* The Python-loop oracle through ``jaxlstm.layer`` and ``jaxlstm.stack``, with lengths, masks, resets
  and reverse; ``jit``, ``vmap``, finite differences in float64.
* The Flax modules, ``fit`` with a checkpoint, the command line.
* NX-AI's ``xlstm`` package (its vanilla PyTorch backend) on converted weights, when it is installed.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import jaxlstm
from jaxlstm.checkpoint import Checkpointer, CheckpointError
from tests.helpers import assert_trees_equal, normal, random_params, rel_err
from tests.oracle import python_unroll

B, T, I, H = 3, 6, 2, 4
LENGTHS = np.array([6, 2, 0])
MASK = np.array([[1, 1, 0, 1, 1, 0], [1, 0, 1, 1, 1, 1], [0, 1, 1, 0, 1, 1]], bool)
RESETS = np.array([[0, 0, 1, 0, 0, 1], [1, 0, 0, 0, 1, 0], [0, 1, 1, 0, 0, 0]], bool)
# (num_heads, forget_gate); one head of H units, two of 2, four of 1.
VARIANTS = {"dense_sigmoid": (1, "sigmoid"), "heads2_exp": (2, "exp"), "heads4_sigmoid": (4, "sigmoid")}


def setup(variant, dtype=jnp.float64, batch=(B,), scale=0.5):
  num_heads, forget_gate = VARIANTS[variant]
  params = random_params(
    jaxlstm.slstm_init, I, H, num_heads=num_heads, forget_gate=forget_gate, dtype=dtype, scale=scale
  )
  xs = normal((*batch, T, I), dtype, seed=1)
  return params, xs


def live_state(batch=(B,), dtype=jnp.float64):
  """A state from the middle of a run: any h, c and m, and a positive normalizer n."""
  h, c, n, m = (normal((*batch, H), dtype, seed=s) for s in (2, 3, 4, 5))
  return jaxlstm.SLSTMState(h=jnp.tanh(h), c=c, n=jnp.exp(n), m=m)


# --- The float64 NumPy reference, from the paper's equations. ---


def sigmoid(x):
  return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow at large |x|


def dense_recurrence(params):
  """The block-diagonal ``R`` as a dense ``(H, 4H)`` matrix with the layout of ``w_x``, built block by block."""
  K = params.num_heads
  D = H // K
  r = np.asarray(params.r, np.float64)  # (K, D, 4D)
  R = np.zeros((H, 4 * H))
  for k in range(K):
    for g in range(4):
      R[k * D : (k + 1) * D, g * H + k * D : g * H + (k + 1) * D] = r[k][:, g * D : (g + 1) * D]
  return R


def numpy_slstm(params, xs, state=None, *, stabilized=True):
  """Beck et al. (2024), Section 2.2, one step at a time: ``(hs (B, T, H), (h, c, n, m))``.

  ``stabilized=False`` runs the raw equations, ``i = exp(i~)``, ``f = exp(f~)`` or ``sigmoid(f~)``, with no
  ``m``. Stabilized, an empty state (``n = 0``) starts ``m`` from ``log i``, as xlstm's vanilla backend does.
  """
  w, b = np.asarray(params.w_x, np.float64), np.asarray(params.b, np.float64)
  R = dense_recurrence(params)
  xs = np.asarray(xs, np.float64)
  zeros = np.zeros((xs.shape[0], H))
  h, c, n, m = (zeros,) * 4 if state is None else (np.asarray(a, np.float64) for a in state)
  hs = []
  for t in range(xs.shape[1]):
    pre = xs[:, t] @ w + h @ R + b
    zi, zf, zz, zo = (pre[:, g * H : (g + 1) * H] for g in range(4))
    z, o = np.tanh(zz), sigmoid(zo)
    if stabilized:
      log_i = zi
      log_f = zf if params.forget_gate == "exp" else -np.logaddexp(0.0, -zf)  # log sigmoid, stably
      m_new = np.where(n == 0, log_i, np.maximum(log_f + m, log_i))
      i_gate = np.exp(log_i - m_new)
      f_gate = np.exp(np.where(n == 0, -np.inf, log_f + m - m_new))
      m = m_new
    else:
      i_gate = np.exp(zi)
      f_gate = np.exp(zf) if params.forget_gate == "exp" else sigmoid(zf)
    c = f_gate * c + i_gate * z
    n = f_gate * n + i_gate
    h = o * c / n
    hs.append(h)
  return np.stack(hs, axis=1), (h, c, n, m)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layer_matches_the_papers_equations(variant):
  params, xs = setup(variant)
  for state in (None, live_state()):
    want_hs, want_state = numpy_slstm(params, xs, state)
    final, hs = jaxlstm.layer(params, xs, state)
    assert rel_err(hs, want_hs) < 1e-12
    for got, want in zip(final, want_state):
      assert rel_err(got, want) < 1e-12


def test_stabilized_and_unstabilized_equations_agree_on_moderate_inputs():
  for variant in ("dense_sigmoid", "heads2_exp"):
    params, xs = setup(variant)
    raw_hs, (_, raw_c, raw_n, _) = numpy_slstm(params, xs, stabilized=False)
    final, hs = jaxlstm.layer(params, xs)
    assert rel_err(hs, raw_hs) < 1e-12
    # c and n are the raw cell and normalizer scaled by exp(-m).
    assert rel_err(final.c * jnp.exp(final.m), raw_c) < 1e-12 and rel_err(final.n * jnp.exp(final.m), raw_n) < 1e-12
    assert float(jnp.min(final.n)) >= 1.0


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_no_overflow_where_the_unstabilized_form_overflows(forget_gate):
  params, xs = setup("heads2_exp")
  params = params._replace(w_x=params.w_x * 2000.0, forget_gate=forget_gate)  # pre-activations in the thousands
  with np.errstate(over="ignore", invalid="ignore"):
    raw_hs, _ = numpy_slstm(params, xs, stabilized=False)
  assert not np.isfinite(raw_hs).all()  # exp overflows even in float64
  want, _ = numpy_slstm(params, xs)
  final, hs = jaxlstm.layer(params, xs)
  assert rel_err(hs, want) < 1e-12 and np.isfinite(np.asarray(final.m)).all()
  final32, hs32 = jaxlstm.layer(jax.tree.map(lambda a: a.astype(jnp.float32), params), xs.astype(jnp.float32))
  assert all(bool(jnp.isfinite(leaf).all()) for leaf in (hs32, *final32))
  np.testing.assert_allclose(hs32, want, atol=1e-3)


def test_the_gate_layout_is_pinned():
  # With no weights, the first step from the empty state gives m = i~, c = tanh(z~), n = 1, h = sigmoid(o~) c.
  assert jaxlstm.SLSTMParams._fields == ("w_x", "r", "b", "num_heads", "forget_gate")
  assert jaxlstm.SLSTMState._fields == ("h", "c", "n", "m")
  params = jaxlstm.slstm_init(jax.random.key(0), I, H, num_heads=2, dtype=jnp.float64)
  assert params.r.shape == (2, 2, 8) and float(jnp.abs(params.r).max()) == 0.0
  assert float(params.b[H]) == 5.0 and float(params.b[2 * H - 1]) == -7.0  # the forget block, head 1
  gates = jnp.array([0.7, -3.0, 0.4, 1.3], jnp.float64)  # i, f, z, o
  params = params._replace(w_x=jnp.zeros_like(params.w_x), b=jnp.repeat(gates, H))
  state, h = jaxlstm.slstm_step(params, jaxlstm.slstm_zero_state(params, (1,)), jnp.ones((1, I), jnp.float64))
  np.testing.assert_allclose(state.m, 0.7)
  np.testing.assert_allclose(state.c, np.tanh(0.4))
  np.testing.assert_allclose(state.n, 1.0)
  np.testing.assert_allclose(h, sigmoid(1.3) * np.tanh(0.4))


def test_a_heads_output_does_not_read_another_heads_recurrent_weights():
  params, xs = setup("heads2_exp", scale=1.0)
  D = H // 2
  _, hs = jaxlstm.layer(params, xs)
  other = params._replace(r=params.r.at[1].multiply(-3.0))  # head 1's recurrent weights only
  _, hs_other = jaxlstm.layer(other, xs)
  np.testing.assert_array_equal(hs[..., :D], hs_other[..., :D])
  assert rel_err(hs_other[..., D:], hs[..., D:]) > 1e-3
  grads = jax.grad(lambda p: jnp.sum(jaxlstm.layer(p, xs)[1][..., :D]))(params)
  assert float(jnp.abs(grads.r[1]).max()) == 0.0 and float(jnp.abs(grads.r[0]).max()) > 0.0


def test_explicit_impls_other_than_reference_refuse_it():
  params, xs = setup("heads2_exp", jnp.float32)
  assert jaxlstm.explain(params, xs).kernel == "reference"
  with pytest.raises(ValueError, match="impl='fused' cannot run this layer: it runs LSTM layers only, not slstm"):
    jaxlstm.layer(params, xs, impl="fused")
  with pytest.raises(ValueError, match="impl='cudnn' cannot run this layer: it runs LSTM layers only, not slstm"):
    jaxlstm.layer(params, xs, impl="cudnn")
  with pytest.raises(
    ValueError, match="impl='parallel' cannot run this layer: .* not slstm, whose step is not linear in h"
  ):
    jaxlstm.layer(params, xs, impl="parallel")


def test_bad_settings_are_refused():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"num_heads must divide hidden_size=4; got 3"):
    jaxlstm.slstm_init(key, I, H, num_heads=3)
  with pytest.raises(ValueError, match=r"num_heads must be a positive int; got 0"):
    jaxlstm.slstm_init(key, I, H, num_heads=0)
  with pytest.raises(ValueError, match=r"forget_gate must be one of \('sigmoid', 'exp'\); got 'tanh'"):
    jaxlstm.slstm_init(key, I, H, forget_gate="tanh")
  params, xs = setup("heads2_exp", jnp.float32)
  with pytest.raises(
    ValueError,
    match=r"params.r must have shape \(num_heads, D, 4D\) = \(4, 1, 4\) for "
    r"num_heads=4 and H=4; got \(2, 2, 8\)",
  ):
    jaxlstm.layer(params._replace(num_heads=4), xs)


# --- Layers and stacks against the Python loop; jit, vmap, gradients. ---


def test_layer_with_missing_data_and_reverse_against_the_loop():
  params, xs = setup("heads2_exp")
  for kw in ({"lengths": LENGTHS, "resets": RESETS}, {"reverse": True, "lengths": LENGTHS, "mask": MASK}):
    want_final, want = python_unroll(jaxlstm.slstm_step, params, xs, jaxlstm.zero_state(params, (B,)), **kw)
    final, hs = jaxlstm.layer(params, xs, **kw)
    assert rel_err(hs, want) < 1e-12
    for got, w in zip(final, want_final):
      assert rel_err(got, w) < 1e-12


def test_bidirectional_stack_with_heads_against_the_loop():
  params = random_params(jaxlstm.stack_init, I, H, 2, cell="slstm", bidirectional=True, num_heads=2, dtype=jnp.float64)
  assert params[1].backward.num_heads == 2 and params[1].backward.w_x.shape == (2 * H, 4 * H)
  xs = normal((B, T, I), jnp.float64, seed=1)
  states, hs = jaxlstm.stack(params, xs, lengths=LENGTHS, resets=RESETS)
  h = xs
  for layer in params:
    zero = jaxlstm.zero_state(layer.forward, (B,))
    fw_state, fw = python_unroll(jaxlstm.slstm_step, layer.forward, h, zero, lengths=LENGTHS, resets=RESETS)
    bw_state, bw = python_unroll(
      jaxlstm.slstm_step, layer.backward, h, zero, lengths=LENGTHS, resets=RESETS, reverse=True
    )
    h = jnp.concatenate([fw, bw], -1)
  assert rel_err(hs, h) < 1e-12
  for got, want in zip((*states[-1].forward, *states[-1].backward), (*fw_state, *bw_state)):
    assert rel_err(got, want) < 1e-12


def test_jit_vmap_over_an_ensemble_and_over_rows():
  p0, xs = setup("heads2_exp", jnp.float32)
  p1 = jax.tree.map(lambda a: -a, p0)
  ensemble = jax.tree.map(lambda *a: jnp.stack(a), p0, p1)
  assert ensemble.num_heads == 2 and ensemble.forget_gate == "exp"
  hs = jax.jit(jax.vmap(lambda p: jaxlstm.layer(p, xs, lengths=LENGTHS)[1]))(ensemble)
  for k, p in enumerate((p0, p1)):
    np.testing.assert_allclose(hs[k], jaxlstm.layer(p, xs, lengths=LENGTHS)[1], rtol=1e-6, atol=1e-6)
  rows = jax.vmap(lambda x: jaxlstm.layer(p0, x)[1])(xs)  # each row alone, unbatched
  np.testing.assert_allclose(rows, jaxlstm.layer(p0, xs)[1], rtol=1e-6, atol=1e-6)
  grads = jax.jit(jax.vmap(jax.grad(lambda p: jnp.sum(jaxlstm.layer(p, xs)[1]))))(ensemble)
  assert grads.num_heads == 2 and grads.r.shape == ensemble.r.shape


def test_gradients_against_finite_differences():
  params, xs = setup("heads2_exp")
  w = normal((B, T, H), jnp.float64, seed=7)

  def from_empty(p, x):
    return jnp.sum(jaxlstm.layer(p, x, lengths=LENGTHS, resets=RESETS, reverse=True)[1] * w)

  # Jitted, so that the finite differences' many evaluations run one compiled program.
  check_grads(jax.jit(from_empty), (params, xs), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_bfloat16_params_keep_a_float32_state():
  params, xs = setup("heads2_exp", jnp.float32)
  lo = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  final, hs = jaxlstm.layer(lo, xs.astype(jnp.bfloat16))
  assert final.m.dtype == jnp.float32 and hs.dtype == jnp.bfloat16
  np.testing.assert_allclose(hs.astype(jnp.float32), jaxlstm.layer(params, xs)[1], rtol=0.05, atol=0.05)


# --- The Flax modules, fit with a checkpoint, the command line. ---


def test_nnx_and_linen_modules():
  from flax import nnx

  import jaxlstm.linen
  import jaxlstm.nnx

  xs = normal((B, T, I))
  layer = jaxlstm.nnx.Layer(I, H, cell="slstm", num_heads=2, rngs=nnx.Rngs(0))
  assert layer.cell == "slstm" and layer.options["num_heads"] == 2
  np.testing.assert_array_equal(layer(xs, lengths=LENGTHS), jaxlstm.layer(layer.params, xs, lengths=LENGTHS)[1])
  named = jaxlstm.nnx.SLSTM(I, H, forget_gate="exp", rngs=nnx.Rngs(0))
  assert named.params.forget_gate == "exp"
  stack = jaxlstm.nnx.Stack(I, H, num_layers=1, cell="slstm", num_heads=4, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(stack(xs), jaxlstm.stack(stack.params, xs)[1])
  cell = jaxlstm.nnx.SLSTMCell(I, H, num_heads=2, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(
    cell(cell.initial_state((B,)), xs[:, 0])[1],
    jaxlstm.slstm_step(cell.params, jaxlstm.zero_state(cell.params, (B,)), xs[:, 0])[1],
  )
  module = jaxlstm.linen.SLSTM(H, num_heads=2, forget_gate="exp")
  variables = module.init(jax.random.key(0), xs)
  params = jaxlstm.linen.from_variables(variables)
  assert isinstance(params, jaxlstm.SLSTMParams) and (params.num_heads, params.forget_gate) == (2, "exp")
  np.testing.assert_array_equal(module.apply(variables, xs), jaxlstm.layer(params, xs)[1])
  linen_stack = jaxlstm.linen.Stack(H, num_layers=1, cell="slstm", options={"num_heads": 2})
  variables = linen_stack.init(jax.random.key(0), xs)
  params = jaxlstm.linen.from_variables(variables)
  assert params[0].num_heads == 2
  np.testing.assert_array_equal(linen_stack.apply(variables, xs), jaxlstm.stack(params, xs)[1])


@pytest.mark.standard_promotion  # optax promotes implicitly
def test_fit_and_a_checkpoint_round_trip(tmp_path):
  from jaxlstm.models import model_apply, model_init, task_loss

  params = model_init(jax.random.key(0), I, 1, hidden=H, cell="slstm")
  params = params._replace(
    rnn=jaxlstm.stack_init(jax.random.key(1), I, H, 1, cell="slstm", num_heads=2, forget_gate="exp")
  )
  rng = np.random.default_rng(0)
  data = {
    "xs": rng.standard_normal((64, T, I)).astype(np.float32),
    "ys": rng.standard_normal((64, 1)).astype(np.float32),
  }

  def loss_fn(p, batch, key):
    return task_loss("regress", model_apply(p, batch["xs"], per_step=False), batch)

  trained, history = jaxlstm.fit(
    params, loss_fn, data, steps=4, batch_size=16, checkpoint_dir=str(tmp_path), save_every=2, progress=False
  )
  assert all(np.isfinite(h["loss"]) for h in history)
  assert float(jnp.abs(trained.rnn[0].r).max()) > 0.0  # the recurrence is learned from its zero init
  ckpt = Checkpointer(tmp_path)
  back = ckpt.restore(jaxlstm.init_train_state(params, optax.adam(1e-3)))
  assert_trees_equal(back.params, trained)
  assert (back.params.rnn[0].num_heads, back.params.rnn[0].forget_gate) == (2, "exp")
  # The forget gate is part of the structure: a sigmoid model cannot load an exp checkpoint.
  sigmoid_model = params._replace(rnn=tuple(p._replace(forget_gate="sigmoid") for p in params.rnn))
  with pytest.raises(CheckpointError, match="saved from a model of another structure"):
    ckpt.restore(jaxlstm.init_train_state(sigmoid_model, optax.adam(1e-3)))


@pytest.mark.standard_promotion
def test_the_command_line_trains_an_slstm(tmp_path, capsys):
  from jaxlstm.cli import main
  from jaxlstm.models import cell_presets

  assert cell_presets()["slstm"] == {"cell": "slstm"}  # one head: any --hidden
  out = str(tmp_path / "run")
  assert (
    main(
      [
        "train",
        "--task",
        "adding",
        "--cell",
        "slstm",
        "--seq-len",
        "8",
        "--n-train",
        "32",
        "--n-test",
        "16",
        "--hidden",
        "6",
        "--batch-size",
        "16",
        "--steps",
        "2",
        "--out",
        out,
        "--quiet",
      ]
    )
    == 0
  )
  assert "test mse" in capsys.readouterr().out
  with open(tmp_path / "run" / "config.json") as f:
    assert json.load(f)["cell"] == "slstm"


# --- Peer: NX-AI's xlstm package, vanilla (PyTorch) backend, on converted weights. ---


def xlstm_layer(conv1d_kernel_size=0):
  torch = pytest.importorskip("torch")
  pytest.importorskip("xlstm")
  from xlstm.blocks.slstm.layer import sLSTMLayer, sLSTMLayerConfig

  torch.manual_seed(0)
  layer = sLSTMLayer(
    sLSTMLayerConfig(
      embedding_dim=8, num_heads=2, conv1d_kernel_size=conv1d_kernel_size, backend="vanilla", dtype="float32"
    )
  )
  with torch.no_grad():  # random everywhere: xlstm initializes R to zero
    for p in layer.parameters():
      p.normal_(0.0, 0.5)
  return torch, layer.double().eval()


def test_parity_with_xlstm():
  from jaxlstm.interop.xlstm import from_xlstm, from_xlstm_state, to_xlstm_state

  torch, layer = xlstm_layer()
  x = torch.randn(3, 7, 8, dtype=torch.float64)
  seen = {}
  layer.slstm_cell.register_forward_hook(lambda module, args, out: seen.update(y=out[0], state=out[1]))
  with torch.no_grad():
    layer(x, return_last_state=True)
  y = seen["y"].transpose(1, 2).reshape(3, 7, 8).numpy()  # (B, heads, S, D) -> (B, S, H), before the group norm
  params = from_xlstm(layer)
  assert (params.num_heads, params.forget_gate, params.w_x.dtype) == (2, "sigmoid", jnp.float64)
  final, hs = jaxlstm.layer(params, jnp.asarray(x.numpy()))
  assert rel_err(hs, y) < 1e-12
  for got, want in zip(final, from_xlstm_state(seen["state"])):
    assert rel_err(got, want) < 1e-12
  # The cell alone, continued from a state that xlstm left: its input is the gates' pre-activations.
  cell = layer.slstm_cell
  gates = torch.randn(3, 7, 32, dtype=torch.float64)
  with torch.no_grad():
    _, mid = cell(gates[:, :4])
    y_rest, last = cell(gates[:, 4:], state=torch.from_numpy(to_xlstm_state(from_xlstm_state(mid))))
  final, hs = jaxlstm.layer(from_xlstm(cell), jnp.asarray(gates[:, 4:].numpy()), from_xlstm_state(mid))
  assert rel_err(hs, y_rest.transpose(1, 2).reshape(3, 3, 8).numpy()) < 1e-12
  assert rel_err(final.m, from_xlstm_state(last).m) < 1e-12
  with pytest.raises(ValueError, match=r"module has a causal convolution \(conv1d_kernel_size=4\)"):
    from_xlstm(xlstm_layer(conv1d_kernel_size=4)[1])
