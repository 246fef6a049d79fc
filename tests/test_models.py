"""The task model: losses against NumPy, readouts, bfloat16 compute, sampling, and the vmapped sweep."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm.models import model_apply, model_init, task_loss
from jaxlstm.sample import sample_text
from tests.helpers import normal

pytestmark = pytest.mark.standard_promotion


def test_task_losses_match_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 5)).astype(np.float32)
  ys = np.array([0, 3, 4, 3])
  loss, m = task_loss("classify", jnp.asarray(logits), {"ys": jnp.asarray(ys)})
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  np.testing.assert_allclose(loss, -logp[np.arange(4), ys].mean(), rtol=1e-5)
  np.testing.assert_allclose(m["accuracy"], (logits.argmax(-1) == ys).mean())
  seq = rng.normal(size=(2, 3, 5)).astype(np.float32)
  yt = np.array([[1, 2, 3], [4, 0, 0]])
  lengths = np.array([3, 1])
  loss, m = task_loss("lm", jnp.asarray(seq), {"ys": jnp.asarray(yt), "lengths": jnp.asarray(lengths)})
  lp = seq - np.log(np.exp(seq).sum(-1, keepdims=True))
  want = -(lp[0, 0, 1] + lp[0, 1, 2] + lp[0, 2, 3] + lp[1, 0, 4]) / 4
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(m["bits_per_char"], want / np.log(2), rtol=1e-5)
  pred = rng.normal(size=(3, 1)).astype(np.float32)
  loss, m = task_loss("regress", jnp.asarray(pred), {"ys": jnp.zeros((3, 1), jnp.float32)})
  np.testing.assert_allclose(loss, (pred**2).mean(), rtol=1e-6)


def test_readout_is_last_valid_step():
  params = model_init(jax.random.key(0), 2, 3, hidden=4, layers=2, cell="peephole")
  xs = normal((3, 6, 2))
  lengths = jnp.asarray([6, 2, 4])
  out = model_apply(params, xs, per_step=False, lengths=lengths)
  _, hs = jaxlstm.stack(params.rnn, xs, lengths=lengths)
  last = hs[jnp.arange(3), lengths - 1]
  np.testing.assert_allclose(out, last @ params.head.w + params.head.b, rtol=1e-5, atol=1e-6)
  per = model_apply(params, xs, per_step=True, lengths=lengths)
  assert per.shape == (3, 6, 3)


def test_bidirectional_readout_and_bfloat16():
  params = model_init(jax.random.key(0), 2, 3, hidden=4, bidirectional=True, cell="gru")
  xs = normal((2, 5, 2))
  out32 = model_apply(params, xs, per_step=False)
  out16 = model_apply(params, xs, per_step=False, compute_dtype=jnp.bfloat16)
  assert out16.dtype == jnp.float32 and out16.shape == (2, 3)
  np.testing.assert_allclose(out16, out32, atol=0.1)
  _, hs = jaxlstm.stack(params.rnn, xs)
  feats = jnp.concatenate([hs[:, -1, :4], hs[:, 0, 4:]], -1)
  np.testing.assert_allclose(out32, feats @ params.head.w + params.head.b, rtol=1e-5, atol=1e-6)


def test_sample_text_is_deterministic_and_checks_prompt():
  vocab = "ab\n"
  params = model_init(jax.random.key(1), 3, 3, hidden=4)
  a = sample_text(params, vocab, "ab", length=12, seed=3)
  b = sample_text(params, vocab, "ab", length=12, seed=3)
  assert a == b and a.startswith("ab") and len(a) == 14 and set(a) <= set(vocab)
  with pytest.raises(ValueError, match=r"prompt has characters that are not in the model's vocabulary: \['z'\]"):
    sample_text(params, vocab, "az", length=3)


def test_sweep_members_train_independently():
  from jaxlstm.experiment import RunConfig, load_task
  from jaxlstm.sweep import summarize, train_ensemble

  cfg = RunConfig(
    task="adding",
    task_options={"T": 6, "n_train": 32, "n_val": 8, "n_test": 16},
    hidden=4,
    steps=3,
    batch_size=8,
    schedule="cosine",
    warmup=1,
  )
  task = load_task(cfg)
  rows = train_ensemble(task, cfg, lrs=[1e-3, 1e-1], seeds=[0, 1])
  assert [(r["lr"], r["seed"]) for r in rows] == [(1e-3, 0), (1e-3, 1), (1e-1, 0), (1e-1, 1)]
  solo = train_ensemble(task, cfg, lrs=[1e-1], seeds=[1])
  np.testing.assert_allclose(solo[0]["val_mse"], rows[3]["val_mse"], rtol=1e-5)
  assert rows[0]["val_mse"] != rows[2]["val_mse"]
  assert not any(k.startswith("test_") for k in rows[0])  # members are compared on validation only
  summary = summarize(rows)
  assert len(summary) == 2 and summary[0]["metric"] == "val_rmse" and summary[0]["seeds"] == 2
