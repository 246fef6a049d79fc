"""minGRU and minLSTM (Feng et al., 2024) and the parallel kernel, against oracles that share no code with them.

* A float64 NumPy reference written from the paper's equations, and the paper's own parallel algorithm
  (Heinsen's log-space scan, its Appendix B) in NumPy.
* The reference kernel (``lax.scan`` over the step) and the Python-loop oracle, with lengths, masks,
  resets, reverse and bidirectional stacks, on every block size of the parallel scan.
* ``jit``, ``vmap``, finite differences in float64; the Flax modules, ``fit`` with a checkpoint, the CLI.
* The ``mingru-pytorch`` package on converted weights, when it is installed.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import jaxlstm
from jaxlstm._src.kernels import parallel
from jaxlstm.checkpoint import Checkpointer, CheckpointError
from tests.helpers import assert_trees_equal, normal, random_params, rel_err
from tests.oracle import python_unroll

B, T, I, H = 3, 7, 2, 4
LENGTHS = np.array([7, 3, 0])
MASK = np.array([[1, 1, 0, 1, 1, 0, 1], [1, 0, 1, 1, 1, 1, 1], [0, 1, 1, 0, 1, 1, 0]], bool)
RESETS = np.array([[0, 0, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0, 1]], bool)
CELLS = {"mingru": {}, "mingru_plain": {"log_space": False}, "minlstm": {}, "minlstm_plain": {"log_space": False}}


def setup(variant, dtype=jnp.float64, batch=(B,)):
  cell = variant.split("_")[0]
  params = random_params(jaxlstm.get_cell(cell).init, I, H, dtype=dtype, scale=1.0, **CELLS[variant])
  xs = normal((*batch, T, I), dtype, seed=1, scale=2.0)  # wide pre-activations: both branches of g
  state = jax.tree.map(lambda z: normal(z.shape, dtype, seed=2), jaxlstm.zero_state(params, batch))
  return cell, params, xs, state


# --- The float64 NumPy references, from the paper's equations. ---


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def g(x):
  return np.where(x >= 0, x + 0.5, sigmoid(x))


def numpy_loop(cell, params, xs, h0):
  """Section 3 of the paper, step by step: ``(B, T, H)`` states."""
  w, b = np.asarray(params.w_x, np.float64), np.asarray(params.b, np.float64)
  cand = g if params.log_space else (lambda x: x)
  h, hs = np.asarray(h0, np.float64), []
  for t in range(xs.shape[1]):
    k = np.asarray(xs[:, t], np.float64) @ w + b
    if cell == "mingru":
      z = sigmoid(k[:, :H])
      h = (1 - z) * h + z * cand(k[:, H:])
    else:
      f, i = sigmoid(k[:, :H]), sigmoid(k[:, H : 2 * H])
      h = f / (f + i) * h + i / (f + i) * cand(k[:, 2 * H :])
    hs.append(h)
  return np.stack(hs, axis=1)


def softplus(x):
  return np.logaddexp(0.0, x)


def log_g(x):
  return np.where(x >= 0, np.log(np.maximum(x, 0) + 0.5), -softplus(-x))


def numpy_heinsen(cell, params, xs, h0):
  """The paper's parallel log-space version (Appendix B): ``log h = a* + logcumsumexp(log b - a*)``; ``h0 > 0``."""
  k = np.asarray(xs, np.float64) @ np.asarray(params.w_x, np.float64) + np.asarray(params.b, np.float64)
  if cell == "mingru":
    log_a, log_b = -softplus(k[..., :H]), -softplus(-k[..., :H]) + log_g(k[..., H:])
  else:
    diff = softplus(-k[..., :H]) - softplus(-k[..., H : 2 * H])
    log_a, log_b = -softplus(diff), -softplus(-diff) + log_g(k[..., 2 * H :])
  log_values = np.concatenate([np.log(np.asarray(h0, np.float64))[:, None], log_b], axis=1)
  a_star = np.pad(np.cumsum(log_a, axis=1), ((0, 0), (1, 0), (0, 0)))
  return np.exp(a_star + np.logaddexp.accumulate(log_values - a_star, axis=1))[:, 1:]


@pytest.mark.parametrize("variant", list(CELLS))
def test_both_kernels_match_the_papers_equations(variant):
  cell, params, xs, state = setup(variant)
  want = numpy_loop(cell, params, np.asarray(xs), state.h)
  for impl in ("parallel", "reference"):
    final, hs = jaxlstm.layer(params, xs, state, impl=impl)
    assert rel_err(hs, want) < 1e-13, impl
    assert rel_err(final.h, want[:, -1]) < 1e-13, impl
  if params.log_space:
    positive = jnp.abs(state.h) + 0.1  # the log-space scan needs h0 > 0
    hs = jaxlstm.layer(params, xs, jaxlstm.get_cell(cell).state_type(positive))[1]
    assert rel_err(hs, numpy_heinsen(cell, params, np.asarray(xs), positive)) < 1e-12
    assert bool((hs > 0).all())  # g keeps h positive from a positive start


def test_step_follows_the_documented_layout():
  # minGRU blocks z, h: a huge z pre-activation copies the candidate, g(2) = 2.5; minLSTM blocks f, i, h.
  params = jaxlstm.MinGRUParams(jnp.zeros((1, 2)), jnp.array([50.0, 2.0]))
  assert float(jaxlstm.mingru_step(params, jaxlstm.MinGRUState(jnp.array([7.0])), jnp.zeros(1))[1][0]) == 2.5
  params = jaxlstm.MinLSTMParams(jnp.zeros((1, 3)), jnp.array([-50.0, 50.0, -1.0]), log_space=False)
  assert float(jaxlstm.minlstm_step(params, jaxlstm.MinLSTMState(jnp.array([7.0])), jnp.zeros(1))[1][0]) == -1.0
  assert jaxlstm.MinGRUParams._fields == ("w_x", "b", "log_space")
  # Both minLSTM gates underflow in float32 here; the normalized gates are their limit, not 0 / 0.
  params = jaxlstm.MinLSTMParams(jnp.zeros((1, 3)), jnp.array([-200.0, -201.0, 3.0]), log_space=False)
  h, grad = jax.value_and_grad(lambda p: jaxlstm.layer(p, jnp.zeros((1, 2, 1)))[1][0, -1, 0])(params)
  f = 1 / (1 + np.exp(-1.0))  # sigmoid(k_f - k_i)
  np.testing.assert_allclose(h, 3 * (1 - f) * (1 + f), rtol=1e-6)
  assert all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(grad))
  assert jaxlstm.MinLSTMState._fields == ("h",)


# --- The parallel scan on every block size, against the reference kernel and the loop. ---

BLOCKS = [1, 3, T]  # one step at a time (the CPU default), blocks that do not divide T, one associative scan
CASES = {  # test_kernels.py runs every case on the default block; here each block runs the hardest ones
  "mingru_mask_resets": ("mingru", {"mask": MASK, "resets": RESETS}),
  "minlstm_plain_reverse_lengths_resets": ("minlstm_plain", {"reverse": True, "lengths": LENGTHS, "resets": RESETS}),
}


@pytest.fixture(params=BLOCKS, ids=lambda n: f"block{n}")
def block(request, monkeypatch):
  monkeypatch.setattr(parallel, "default_block", lambda T: request.param)
  return request.param


@pytest.mark.parametrize("case", list(CASES))
def test_parallel_matches_reference_and_loop_on_every_block(case, block):
  variant, kw = CASES[case]
  cell, params, xs, state = setup(variant)
  assert jaxlstm.explain(params, xs, **kw).kernel == "parallel"
  want_final, want = python_unroll(jaxlstm.get_cell(cell).step, params, xs, state, **kw)
  for impl in ("parallel", "reference"):
    final, hs = jaxlstm.layer(params, xs, state, impl=impl, **kw)
    assert rel_err(hs, want) < 1e-12 and rel_err(final.h, want_final.h) < 1e-12, impl


def test_parallel_gradients_match_reference_on_every_block(block):
  _, params, xs, state = setup("minlstm")
  kw = CASES["minlstm_plain_reverse_lengths_resets"][1]
  w = normal((B, T, H), jnp.float64, seed=5)

  def loss(impl):
    def f(p, x, s):
      final, hs = jaxlstm.layer(p, x, s, impl=impl, **kw)
      return jnp.sum(hs * w) + jnp.sum(final.h**2)

    return jax.grad(f, argnums=(0, 1, 2))

  got, want = loss("parallel")(params, xs, state), loss("reference")(params, xs, state)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert rel_err(a, b) < 1e-11


def test_parallel_gradients_against_finite_differences_in_both_modes():
  # On the default block, to second order: forward over forward and over reverse, through the custom_jvp. The other
  # blocks are held to the reference kernel's gradients and forward mode.
  _, params, xs, state = setup("minlstm")
  kw = {"lengths": np.minimum(LENGTHS, 4), "resets": RESETS[:, :4]}
  loss = jax.jit(lambda p, x, s: jnp.sum(jnp.sin(jaxlstm.layer(p, x, s, impl="parallel", **kw)[1])))
  check_grads(loss, (params, xs[:, :4], state), order=2, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def test_forward_mode_matches_reference_on_every_block(monkeypatch):
  """jvp, jacfwd and hessian through the parallel kernel (a custom_jvp over a linear recurrence) equal the scan's."""
  cases = [(setup(variant), kw) for variant, kw in CASES.values()]
  assert all(jaxlstm.explain(params, xs, **kw).kernel == "parallel" for (_, params, xs, _), kw in cases)

  def everything(impl):
    out = []
    for (_, params, xs, state), kw in cases:
      run = functools.partial(jaxlstm.layer, impl=impl, **kw)
      f = lambda p, x, s, run=run: jnp.sum(jnp.sin(run(p, x, s)[1]))
      tangents = jax.tree.map(lambda a: normal(a.shape, a.dtype, seed=7), (params, xs, state))
      out.append(
        (
          jax.jvp(run, (params, xs, state), tangents),
          jax.jacfwd(f, argnums=(0, 2))(params, xs, state),  # jvp under vmap
          jax.hessian(f, argnums=1)(params, xs, state),  # forward over reverse
        )
      )
    return out

  # One reference for every block (the block is read when the parallel kernel is traced).
  want = jax.jit(lambda: everything("reference"))()
  for n in BLOCKS:
    monkeypatch.setattr(parallel, "default_block", lambda T, n=n: n)
    got = jax.jit(lambda: everything("parallel"))()
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
      assert a.dtype == b.dtype and rel_err(a, b) < 1e-11, f"block {n}{jax.tree_util.keystr(path)}"


def test_the_scan_of_a_long_float32_sequence_keeps_float64_accuracy():
  # No logs, no division: the blocks' products only shrink, so float32 stays at rounding over 4096 steps.
  rng = np.random.default_rng(0)
  a, b = rng.uniform(0.0, 1.0, (4096, 2, 8)), rng.standard_normal((4096, 2, 8))
  h, want = np.zeros((2, 8)), []
  for t in range(4096):
    h = a[t] * h + b[t]
    want.append(h)
  k = jnp.asarray(np.concatenate([a, b], axis=-1), jnp.float32)  # gates read (a, b) straight out of k
  scan = jax.jit(
    lambda k, n: parallel.recurrence_scan(
      lambda k: (k[..., :8], k[..., 8:]), k, jnp.zeros((2, 8), jnp.float32), block=n
    ),
    static_argnums=1,
  )
  for n in (1, 64, 4096):
    assert rel_err(scan(k, n), np.stack(want)) < 1e-5, n


def test_bidirectional_stack_against_the_loop():
  params = random_params(jaxlstm.stack_init, I, H, 2, cell="mingru", bidirectional=True, dtype=jnp.float64)
  xs = normal((B, T, I), jnp.float64, seed=1)
  states, hs = jaxlstm.stack(params, xs, lengths=LENGTHS)
  assert {c.kernel for c in jaxlstm.explain(params, xs, lengths=LENGTHS)} == {"parallel"}
  h = xs
  for layer in params:
    zero = jaxlstm.zero_state(layer.forward, (B,))
    fw_state, fw = python_unroll(jaxlstm.mingru_step, layer.forward, h, zero, lengths=LENGTHS)
    bw_state, bw = python_unroll(jaxlstm.mingru_step, layer.backward, h, zero, lengths=LENGTHS, reverse=True)
    h = jnp.concatenate([fw, bw], -1)
  assert rel_err(hs, h) < 1e-12
  assert rel_err(states[-1].forward.h, fw_state.h) < 1e-12 and rel_err(states[-1].backward.h, bw_state.h) < 1e-12


def test_jit_and_vmap_over_an_ensemble():
  _, p0, xs, _ = setup("minlstm", jnp.float32)
  _, p1, _, _ = setup("minlstm", jnp.float32)
  p1 = jax.tree.map(lambda a: a * 0.5, p1)
  ensemble = jax.tree.map(lambda *a: jnp.stack(a), p0, p1)
  run = jax.jit(jax.vmap(lambda p: jaxlstm.layer(p, xs, lengths=LENGTHS)[1]))
  hs = run(ensemble)
  for k, p in enumerate((p0, p1)):
    np.testing.assert_allclose(hs[k], jaxlstm.layer(p, xs, lengths=LENGTHS, impl="reference")[1], rtol=1e-5, atol=1e-6)
  grads = jax.jit(jax.vmap(jax.grad(lambda p: jnp.sum(jaxlstm.layer(p, xs, lengths=LENGTHS)[1]))))(ensemble)
  assert grads.log_space is True and grads.w_x.shape == ensemble.w_x.shape


def test_bfloat16_params_keep_a_float32_state():
  _, params, xs, _ = setup("mingru", jnp.float32)
  lo = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  final, hs = jaxlstm.layer(lo, xs.astype(jnp.bfloat16))
  assert final.h.dtype == jnp.float32 and hs.dtype == jnp.bfloat16
  np.testing.assert_allclose(hs.astype(jnp.float32), jaxlstm.layer(params, xs)[1], rtol=0.05, atol=0.05)


def test_what_the_parallel_kernel_refuses():
  _, params, xs, _ = setup("mingru", jnp.float32)
  with pytest.raises(ValueError, match="impl='parallel' cannot run this layer: remat is implemented by the fused"):
    jaxlstm.layer(params, xs, impl="parallel", remat=2)
  with pytest.raises(ValueError, match="no kernel can run this mingru layer: .*parallel: remat is implemented"):
    jaxlstm.layer(params, xs, remat=2)
  with pytest.raises(
    ValueError,
    match="impl='parallel' cannot run this layer: it runs cells whose gates read only "
    "the input .mingru, minlstm., not lstm",
  ):
    jaxlstm.lstm(random_params(jaxlstm.lstm_init, I, H), xs, impl="parallel")
  with pytest.raises(ValueError, match="impl='fused' cannot run this layer: it runs LSTM layers only, not mingru"):
    jaxlstm.layer(params, xs, impl="fused")
  with pytest.raises(TypeError, match="log_space must be a bool; got 1"):
    jaxlstm.minlstm_init(jax.random.key(0), I, H, log_space=1)


# --- The Flax modules, fit with a checkpoint, the command line. ---


def test_nnx_and_linen_modules():
  from flax import nnx

  import jaxlstm.linen
  import jaxlstm.nnx

  xs = normal((B, T, I))
  layer = jaxlstm.nnx.MinGRU(I, H, rngs=nnx.Rngs(0))
  assert layer.cell == "mingru"
  np.testing.assert_array_equal(layer(xs, lengths=LENGTHS), jaxlstm.layer(layer.params, xs, lengths=LENGTHS)[1])
  stack = jaxlstm.nnx.Stack(I, H, num_layers=2, cell="minlstm", log_space=False, rngs=nnx.Rngs(0))
  assert stack.params[1].log_space is False
  np.testing.assert_array_equal(stack(xs), jaxlstm.stack(stack.params, xs)[1])
  cell = jaxlstm.nnx.MinLSTMCell(I, H, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(
    cell(cell.initial_state((B,)), xs[:, 0])[1],
    jaxlstm.minlstm_step(cell.params, jaxlstm.zero_state(cell.params, (B,)), xs[:, 0])[1],
  )
  module = jaxlstm.linen.MinLSTM(H, log_space=False)
  variables = module.init(jax.random.key(0), xs)
  params = jaxlstm.linen.from_variables(variables)
  assert isinstance(params, jaxlstm.MinLSTMParams) and params.log_space is False
  np.testing.assert_array_equal(module.apply(variables, xs), jaxlstm.layer(params, xs)[1])
  linen_stack = jaxlstm.linen.Stack(H, num_layers=1, cell="mingru")
  variables = linen_stack.init(jax.random.key(0), xs)
  np.testing.assert_array_equal(
    linen_stack.apply(variables, xs), jaxlstm.stack(jaxlstm.linen.from_variables(variables), xs)[1]
  )


@pytest.mark.standard_promotion  # optax promotes implicitly
def test_fit_and_a_checkpoint_round_trip(tmp_path):
  from jaxlstm.models import model_apply, model_init, task_loss

  params = model_init(jax.random.key(0), I, 1, hidden=H, layers=2, cell="minlstm")
  rng = np.random.default_rng(0)
  data = {
    "xs": rng.standard_normal((64, T, I)).astype(np.float32),
    "ys": rng.standard_normal((64, 1)).astype(np.float32),
  }

  def loss_fn(p, batch, key):
    return task_loss("regress", model_apply(p, batch["xs"], per_step=False), batch)

  trained, history = jaxlstm.fit(
    params, loss_fn, data, steps=6, batch_size=16, checkpoint_dir=str(tmp_path), save_every=3, progress=False
  )
  assert np.isfinite(history[-1]["loss"]) and history[-1]["loss"] < history[0]["loss"]
  ckpt = Checkpointer(tmp_path)
  back = ckpt.restore(jaxlstm.init_train_state(params, optax.adam(1e-3)))
  assert_trees_equal(back.params, trained)
  assert back.params.rnn[0].log_space is True
  # log_space is part of the structure: a plain model cannot load a log-space checkpoint.
  plain = params._replace(rnn=tuple(p._replace(log_space=False) for p in params.rnn))
  with pytest.raises(CheckpointError, match="saved from a model of another structure"):
    ckpt.restore(jaxlstm.init_train_state(plain, optax.adam(1e-3)))


@pytest.mark.standard_promotion
def test_the_command_line_trains_a_mingru(tmp_path, capsys):
  from jaxlstm.cli import main
  from jaxlstm.models import cell_presets

  assert cell_presets()["mingru"] == {"cell": "mingru"} and cell_presets()["minlstm"] == {"cell": "minlstm"}
  out = str(tmp_path / "run")
  assert (
    main(
      [
        "train",
        "--task",
        "adding",
        "--cell",
        "mingru",
        "--seq-len",
        "8",
        "--n-train",
        "32",
        "--n-test",
        "16",
        "--hidden",
        "8",
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


# --- Peer: the mingru-pytorch package (lucidrains), on converted weights. ---


def torch_module(kind, dim, expansion):
  torch = pytest.importorskip("torch")
  pytest.importorskip("minGRU_pytorch")
  from minGRU_pytorch.minGRU import minGRU
  from minGRU_pytorch.minLSTM import minLSTM

  torch.manual_seed(0)
  module = (minGRU if kind == "mingru" else minLSTM)(dim, expansion_factor=expansion, proj_out=False).double()
  return torch, module


def from_mingru_pytorch(module, kind):
  """jaxlstm params from a ``minGRU_pytorch`` module: its one bias-free Linear holds the blocks (h, z) or
  (h, f, i), rows out; jaxlstm's ``w_x`` holds (z, h) or (f, i, h), columns out."""
  linear = module.to_hidden_and_gate if kind == "mingru" else module.to_hidden_and_f_i_gate
  w = linear.weight.detach().numpy().T  # (I, nH)
  blocks = np.split(w, 2 if kind == "mingru" else 3, axis=1)
  w_x = np.concatenate(blocks[1:] + blocks[:1], axis=1)
  init = jaxlstm.MinGRUParams if kind == "mingru" else jaxlstm.MinLSTMParams
  return init(jnp.asarray(w_x), jnp.zeros((w_x.shape[1],), jnp.float64))


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_parity_with_mingru_pytorch(kind):
  torch, module = torch_module(kind, 3, 2.0)
  params = from_mingru_pytorch(module, kind)
  Hs = params.hidden_size
  xs = normal((2, 9, 3), jnp.float64, seed=1, scale=2.0)
  h0 = jnp.abs(normal((2, Hs), jnp.float64, seed=2)) + 0.1  # its parallel mode takes log(h0)
  x_t = torch.from_numpy(np.array(xs))
  with torch.no_grad():
    parallel_out = module(x_t).numpy()  # from zero, in its parallel (log-space) mode
    h0_t = torch.from_numpy(np.array(h0))[:, None]
    step_out = module(x_t[:, :1], h0_t).numpy()  # its sequential mode
    from_h0 = module(x_t, h0_t).numpy()
  state_type = jaxlstm.get_cell(kind).state_type
  assert rel_err(jaxlstm.layer(params, xs)[1], parallel_out) < 1e-12
  assert rel_err(jaxlstm.get_cell(kind).step(params, state_type(h0), xs[:, 0])[1], step_out[:, 0]) < 1e-12
  # From a given state, mingru-pytorch 0.2.1's minGRU starts its parallel mode from log(h0), as its
  # sequential mode does; its minLSTM takes log(g(h0)), so from h0 it computes what jaxlstm (and its own
  # sequential mode) compute from g(h0).
  start = h0 if kind == "mingru" else jnp.where(h0 >= 0, h0 + 0.5, jax.nn.sigmoid(h0))
  assert rel_err(jaxlstm.layer(params, xs, state_type(start))[1], from_h0) < 1e-12
