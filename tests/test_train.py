"""Training: the jitted step, optimizers, fit, and checkpoints (exact resume, kills, corruption)."""

import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlstm
from jaxlstm.checkpoint import Checkpointer, CheckpointError
from jaxlstm.optim import make_optimizer, make_schedule
from jaxlstm.train import TrainState, batch_indices, evaluate, fit, init_train_state, make_train_step
from tests.helpers import random_params

pytestmark = pytest.mark.standard_promotion

N, T, I, H = 48, 5, 2, 4


def data(seed=0, n=N):
  rng = np.random.default_rng(seed)
  xs = rng.uniform(size=(n, T, I)).astype(np.float32)
  ys = (xs[:, :, 0].sum(axis=1, keepdims=True) / T).astype(np.float32)
  return {"xs": xs, "ys": ys}


def init_params(seed=0, num_layers=1):
  return {
    "rnn": random_params(jaxlstm.stack_init, I, H, num_layers, seed=seed),
    "w": jnp.zeros((H, 1), jnp.float32),
    "b": jnp.zeros((1,), jnp.float32),
  }


def loss_fn(params, batch, key):
  states, _ = jaxlstm.stack(params["rnn"], batch["xs"], dropout=0.0)
  pred = states[-1].h @ params["w"] + params["b"]
  mse = jnp.mean((pred - batch["ys"]) ** 2)
  return mse, {"mse": mse}


def dropout_loss(params, batch, key):
  states, _ = jaxlstm.stack(params["rnn"], batch["xs"], dropout=0.3, key=key)
  return jnp.mean((states[-1].h @ params["w"] + params["b"] - batch["ys"]) ** 2)


def test_train_step_reduces_loss_on_fixed_batch():
  params = init_params()
  opt = optax.adam(1e-2)
  step = make_train_step(loss_fn, opt)
  state = init_train_state(params, opt)
  batch = jax.tree_util.tree_map(jnp.asarray, data())
  _, first = step(state, batch)
  for _ in range(40):
    state, metrics = step(state, batch)
  assert float(metrics["loss"]) < 0.2 * float(first["loss"])
  assert int(state.step) == 40 and set(metrics) == {"loss", "grad_norm", "mse"}


def test_optimizers_and_schedules():
  sched = make_schedule(1.0, schedule="cosine", warmup_steps=10, total_steps=110)
  assert float(sched(0)) == 0.0 and abs(float(sched(10)) - 1.0) < 1e-6 and float(sched(110)) < 1e-6
  assert abs(float(sched(60)) - 0.5) < 1e-2
  warm = make_schedule(0.1, warmup_steps=4)
  np.testing.assert_allclose([float(warm(s)) for s in (0, 2, 4, 100)], [0, 0.05, 0.1, 0.1], rtol=1e-6)
  g = {"a": jnp.full((4,), 10.0)}
  for name in ("adam", "rmsprop", "sgd"):
    opt = make_optimizer(name, 0.1, clip_norm=1.0)
    upd, _ = opt.update(g, opt.init(g), g)
    assert bool(jnp.all(jnp.isfinite(upd["a"])))
  # With clipping to norm 1 and plain SGD, the update has norm lr * 1.
  opt = make_optimizer("sgd", 0.1, clip_norm=1.0)
  upd, _ = opt.update(g, opt.init(g), g)
  np.testing.assert_allclose(float(optax.tree.norm(upd)), 0.1, rtol=1e-5)
  with pytest.raises(ValueError, match=r"optimizer must be one of \['adam', 'adamw', 'rmsprop', 'sgd'\]; got 'lion'"):
    make_optimizer("lion")
  with pytest.raises(ValueError, match=r"total_steps must exceed warmup_steps=10"):
    make_schedule(1e-3, schedule="cosine", warmup_steps=10)


def test_batch_order_is_a_function_of_seed_and_step():
  a = [batch_indices(10, 3, s, seed=1) for s in range(6)]
  b = [batch_indices(10, 3, s, seed=1) for s in range(6)]
  assert all((x == y).all() for x, y in zip(a, b))
  assert len(set(np.concatenate(a[:3]).tolist())) == 9  # one epoch: 3 disjoint batches
  assert not (a[0] == a[3]).all()  # a new permutation each epoch


def test_fit_records_validation_and_learns():
  params, hist = fit(
    init_params(),
    loss_fn,
    data(0),
    validation_data=data(1, 32),
    batch_size=16,
    epochs=30,
    optimizer=optax.adam(1e-2),
    eval_every=15,
    progress=False,
  )
  assert [r["step"] for r in hist] == list(range(15, 91, 15))
  assert {"loss", "mse", "val_loss", "val_mse", "epoch"} <= set(hist[-1])
  assert hist[-1]["val_mse"] < 0.5 * hist[0]["val_mse"]
  direct = evaluate(loss_fn, params, data(1, 32), batch_size=10)  # 3 full batches and one of 2
  np.testing.assert_allclose(direct["mse"], hist[-1]["val_mse"], rtol=1e-5)


def test_early_stopping_and_restore_best():
  _, hist = fit(
    init_params(),
    loss_fn,
    data(0),
    validation_data=data(1, 16),
    batch_size=16,
    steps=60,
    optimizer=optax.sgd(1e-12),
    eval_every=3,
    early_stopping=2,
    progress=False,
  )
  assert [r["step"] for r in hist] == [3, 6, 9]  # no improvement after the first evaluation
  with pytest.raises(ValueError, match=r"give exactly one of epochs or steps"):
    fit(init_params(), loss_fn, data(0), batch_size=8)
  with pytest.raises(ValueError, match=r"batch_size must be in \[1, 48\]"):
    fit(init_params(), loss_fn, data(0), batch_size=100, steps=1)


def test_exact_resume_and_keep_last(tmp_path):
  kw = dict(batch_size=16, optimizer=optax.adam(1e-2), eval_every=5, save_every=5, keep=2, progress=False)
  params = init_params(num_layers=2)  # dropout between the layers draws on the per-step key
  full, _ = fit(params, dropout_loss, data(0), steps=20, checkpoint_dir=str(tmp_path / "a"), **kw)
  fit(params, dropout_loss, data(0), steps=10, checkpoint_dir=str(tmp_path / "b"), **kw)
  resumed, hist = fit(params, dropout_loss, data(0), steps=20, checkpoint_dir=str(tmp_path / "b"), resume=True, **kw)
  assert [r["step"] for r in hist] == [15, 20]
  for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(a, b)  # to the bit
  assert Checkpointer(tmp_path / "b").all_steps() == [15, 20]


def test_checkpoint_roundtrip_keeps_structure(tmp_path):
  params = random_params(jaxlstm.stack_init, I, H, 2, bidirectional=True, peephole=True)
  opt = optax.adam(1e-3)
  state = init_train_state(params, opt, seed=3)
  ckpt = Checkpointer(tmp_path, save_every=1)
  ckpt.save(7, state)
  like = init_train_state(random_params(jaxlstm.stack_init, I, H, 2, bidirectional=True, peephole=True, seed=9), opt)
  back = ckpt.restore(like)
  assert isinstance(back, TrainState) and int(back.step) == 0 and ckpt.latest_step() == 7
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(state)
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(back)):
    np.testing.assert_array_equal(a, b)


def test_mismatched_and_corrupt_checkpoints(tmp_path):
  opt = optax.adam(1e-3)
  state = init_train_state(init_params(), opt)
  ckpt = Checkpointer(tmp_path, save_every=1)
  ckpt.save(1, state)
  other = init_train_state({**init_params(), "w": jnp.zeros((H, 3), jnp.float32)}, opt)
  with pytest.raises(CheckpointError, match=rf"checkpoint {tmp_path}/1 does not match the model"):
    ckpt.restore(other)
  # Damage every data file of the checkpoint.
  for root, _, files in os.walk(tmp_path / "1"):
    for f in files:
      if "METADATA" not in f and f != "commit_success.txt":
        with open(os.path.join(root, f), "wb") as fh:
          fh.write(b"\x00garbage")
  with pytest.raises(CheckpointError, match=rf"checkpoint {tmp_path}/1 .*(corrupt|incomplete)"):
    ckpt.restore(state)
  with pytest.raises(CheckpointError, match=r"no checkpoint found in"):
    Checkpointer(tmp_path / "empty").restore(state)


KILL_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from jaxlstm.checkpoint import Checkpointer
    ckpt = Checkpointer(sys.argv[1], save_every=1, keep=1000)
    ckpt.save(1, {"w": np.ones((4,), np.float32)})
    print("saved 1", flush=True)
    step = 2
    while True:  # large saves, until the parent kills this process mid-write
        ckpt.save(step, {"w": np.full((64, 1024, 1024), step, np.float32)})
        step += 1
""")


def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
  proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "saved 1"
  import time

  time.sleep(1.5)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  proc.stdout.close()
  ckpt = Checkpointer(tmp_path, save_every=1)
  steps = ckpt.all_steps()
  assert steps and steps[0] == 1
  latest = steps[-1]
  like = {"w": np.zeros((4,), np.float32)} if latest == 1 else {"w": np.zeros((64, 1024, 1024), np.float32)}
  restored = ckpt.restore(like)
  np.testing.assert_array_equal(restored["w"], latest)
  # Whatever the kill left half-written is not listed, and saving again works.
  ckpt.save(latest + 1, {"w": np.zeros((2,), np.float32)})
  assert ckpt.latest_step() == latest + 1
