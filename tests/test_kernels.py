"""Every (cell, kernel) pair that the registries say can run, against the shared Python-loop oracle.

For each registered cell variant and each case of missing data and direction,
:func:`jaxlstm.explain` lists the kernels that can run the call; each of them
must match :func:`tests.oracle.python_unroll` in outputs and final state, and
``impl="auto"`` must pick the first of them.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from tests.helpers import normal, random_params, rel_err
from tests.oracle import python_unroll

B, T, I, H = 3, 5, 2, 4
LENGTHS = np.array([5, 2, 0])
MASK = np.array([[1, 0, 1, 1, 0], [1, 1, 1, 0, 0], [0, 1, 0, 1, 1]], bool)
RESETS = np.array([[0, 0, 1, 0, 0], [1, 0, 0, 1, 0], [0, 1, 1, 0, 0]], bool)

VARIANTS = {
  "lstm": ("lstm", {}),
  "lstm_peephole": ("lstm", {"peephole": True}),
  "lstm_ln_proj": ("lstm", {"layer_norm": True, "proj_size": 3}),
  "gru": ("gru", {}),
  "rnn_tanh": ("rnn", {}),
  "rnn_relu": ("rnn", {"activation": "relu"}),
  "mingru": ("mingru", {}),
  "mingru_plain": ("mingru", {"log_space": False}),
  "minlstm": ("minlstm", {}),
  "minlstm_plain": ("minlstm", {"log_space": False}),
  "slstm_heads": ("slstm", {"num_heads": 2}),
  "slstm_exp": ("slstm", {"forget_gate": "exp"}),
}
CASES = {
  "plain": {},
  "lengths": {"lengths": LENGTHS},
  "mask_resets": {"mask": MASK, "resets": RESETS},
  "reverse_lengths_mask": {"reverse": True, "lengths": LENGTHS, "mask": MASK},
  "reverse_lengths_resets": {"reverse": True, "lengths": LENGTHS, "resets": RESETS},
  "batch2d_time_major": {"time_major": True, "lengths": np.array([[4, 1], [0, 5]])},
}


def test_variants_cover_every_registered_cell():
  # The ConvLSTMs' steps have spatial axes, (*batch, T, *spatial, C): tests/test_convlstm.py runs them through
  # these cases against the same oracle, on flattened steps.
  assert {cell for cell, _ in VARIANTS.values()} == set(jaxlstm.cell_names()) - {"convlstm1d", "convlstm2d"}


def setup(variant, case):
  cell, opts = VARIANTS[variant]
  params = random_params(jaxlstm.get_cell(cell).init, I, H, dtype=jnp.float64, **opts)
  kw = dict(CASES[case])
  batch = (2, 2) if case == "batch2d_time_major" else (B,)
  xs = normal((*batch, T, I), jnp.float64, seed=1)
  state = jax.tree.map(lambda z: normal(z.shape, jnp.float64, seed=2, scale=0.5), jaxlstm.zero_state(params, batch))
  if kw.get("time_major"):
    xs = jnp.moveaxis(xs, -2, 0)
  return params, xs, state, kw


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_runnable_kernel_matches_the_loop(variant, case):
  params, xs, state, kw = setup(variant, case)
  choice = jaxlstm.explain(params, xs, **kw)
  runnable = [name for name, why in choice.reasons.items() if why is None]
  assert runnable and choice.kernel == runnable[0]
  want_final, want_hs = python_unroll(jaxlstm.get_cell(VARIANTS[variant][0]).step, params, xs, state, **kw)
  for impl in runnable:
    final, hs = jaxlstm.layer(params, xs, state, impl=impl, **kw)
    assert hs.shape == want_hs.shape and hs.dtype == want_hs.dtype, impl
    assert rel_err(hs, want_hs) < 1e-12, (impl, rel_err(hs, want_hs))
    for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(want_final)):
      assert rel_err(got, want) < 1e-12, impl


@pytest.mark.parametrize("variant", ["lstm_peephole", "gru", "mingru", "minlstm_plain"])
def test_every_runnable_kernel_matches_the_loop_in_gradients(variant):
  params, xs, state, kw = setup(variant, "reverse_lengths_mask")
  step = jaxlstm.get_cell(VARIANTS[variant][0]).step
  w = jnp.asarray(np.random.default_rng(5).standard_normal((B, T, H)), jnp.float64)

  def loss(run):
    return lambda p, x: jnp.sum(run(p, x)[1] * w)

  want = jax.grad(loss(lambda p, x: python_unroll(step, p, x, state, **kw)), argnums=(0, 1))(params, xs)
  reasons = jaxlstm.explain(params, xs, **kw).reasons
  for impl in [name for name, why in reasons.items() if why is None]:
    run = lambda p, x, impl=impl: jaxlstm.layer(p, x, state, impl=impl, **kw)
    got = jax.grad(loss(run), argnums=(0, 1))(params, xs)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert rel_err(a, b) < 1e-11, impl


def test_explicit_impl_that_cannot_run_raises_and_never_falls_back():
  params, xs, _, _ = setup("gru", "plain")
  with pytest.raises(ValueError, match=r"impl='fused' cannot run this layer: it runs LSTM layers only, not gru"):
    jaxlstm.layer(params, xs, impl="fused")
  lstm, xs, _, _ = setup("lstm", "plain")
  with pytest.raises(ValueError, match=r"impl='fused' cannot run this layer: it takes remat or resets, not both"):
    jaxlstm.lstm(lstm, xs, resets=RESETS, remat=2, impl="fused")
  with pytest.raises(ValueError, match=r"impl='fused' cannot run this layer: zoneout acts inside the time loop"):
    jaxlstm.stack((setup("lstm_ln_proj", "plain")[0],), xs, impl="fused", zoneout=0.1, key=jax.random.key(0))


def test_explain_describes_a_stack_layer_by_layer():
  params = jaxlstm.stack_init(jax.random.key(0), I, H, 2, bidirectional=True)
  xs = normal((B, T, I))
  choices = jaxlstm.explain(params, xs, resets=RESETS)
  assert [c.layer for c in choices] == [
    "params[0].forward",
    "params[0].backward",
    "params[1].forward",
    "params[1].backward",
  ]
  assert {c.kernel for c in choices} == {"fused"}
  assert "runs on 'fused'" in str(choices[0]) and "fused: chosen" in str(choices[0])
  with pytest.raises(ValueError, match="fused: it takes remat or resets, not both"):
    jaxlstm.explain(params, xs, resets=RESETS, remat=2)


def test_the_chosen_kernel_is_logged(caplog):
  params, xs, _, _ = setup("lstm", "plain")
  with caplog.at_level(logging.DEBUG, logger="jaxlstm"):
    jaxlstm.lstm(params, xs)
    jaxlstm.layer(params, xs, zoneout=0.1, key=jax.random.key(0))  # in-loop: the reference kernel
  assert "params: lstm layer runs on the 'fused' kernel (impl='auto')" in caplog.messages
  assert "params: lstm layer runs on the 'reference' kernel (impl='auto')" in caplog.messages


def test_static_activation_survives_jit_vmap_and_tree_maps():
  relu = [random_params(jaxlstm.rnn_init, I, H, activation="relu", seed=s) for s in (0, 1)]
  ensemble = jax.tree.map(lambda *a: jnp.stack(a), *relu)  # params of two models, stacked
  assert ensemble.activation == "relu"
  xs = normal((B, T, I), jnp.float32)
  hs = jax.jit(jax.vmap(lambda p: jaxlstm.rnn(p, xs)[1]))(ensemble)
  for k, p in enumerate(relu):
    np.testing.assert_allclose(hs[k], jaxlstm.rnn(p, xs)[1], rtol=1e-6, atol=1e-6)
  assert float(jnp.min(hs)) == 0.0
  grads = jax.grad(lambda p: jnp.sum(jaxlstm.rnn(p, xs)[1]))(relu[0])
  assert grads.activation == "relu"
  with pytest.raises(ValueError, match="different pytree metadata"):  # relu and tanh params never mix
    jax.tree.map(lambda a, b: a + b, relu[0], relu[0]._replace(activation="tanh"))


@pytest.mark.parametrize("variant", ["lstm", "lstm_peephole", "lstm_ln_proj", "gru", "rnn_relu"])
def test_inference_projects_in_chunks(variant, monkeypatch):
  # Past chunks.PROJECT_BYTES the fused kernels' inference loops project PROJECT_STEPS steps at a time; forced
  # here on T = 11 steps in chunks of 4 (two chunks and a tail of 3), with lengths, masks, resets and reverse.
  from jaxlstm._src.kernels import chunks

  monkeypatch.setattr(chunks, "PROJECT_BYTES", 0)
  monkeypatch.setattr(chunks, "PROJECT_STEPS", 4)
  cell, opts = VARIANTS[variant]
  params = random_params(jaxlstm.get_cell(cell).init, I, H, dtype=jnp.float64, **opts)
  xs = normal((B, 11, I), jnp.float64, seed=1)
  rng = np.random.default_rng(0)
  kw = {"lengths": np.array([11, 6, 0]), "mask": rng.random((B, 11)) < 0.8, "resets": rng.random((B, 11)) < 0.2}
  for reverse in (False, True):
    fast = lambda x, reverse=reverse: jaxlstm.layer(params, x, reverse=reverse, **kw)  # noqa: E731
    assert "length=2" in str(jax.make_jaxpr(fast)(xs))  # the scan over the two whole chunks
    want = jaxlstm.layer(params, xs, reverse=reverse, impl="reference", **kw)
    for a, b in zip(jax.tree.leaves(jax.jit(fast)(xs)), jax.tree.leaves(want)):
      assert rel_err(a, b) < 1e-12
