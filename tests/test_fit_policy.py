"""fit's policies: when it saves checkpoints, when it stops early, and which params restore_best returns.

The model is one scalar ``b`` that plain SGD on ``-b`` raises by exactly 1 per
step, and the validation loss is looked up from a table at ``b``, so each
evaluation's value is chosen by the test.
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlstm.checkpoint import Checkpointer
from jaxlstm.train import fit

pytestmark = pytest.mark.standard_promotion

# Validation loss after step k (the table's entry k; entry 0 is never evaluated).
TABLE = np.array([9, 5, 3, 4, 3, 2, 6, 7, 1], np.float32)
DATA = {"x": np.zeros((4, 1), np.float32)}


def rise(params, batch, key):
  return -params["b"] + 0.0 * batch["x"].sum()


def table_loss(params, batch, key):
  return jnp.asarray(TABLE)[params["b"].astype(jnp.int32)] + 0.0 * batch["x"].sum()


def run(**kw):
  kw = {"steps": len(TABLE) - 1, "eval_every": 1, **kw}
  params, hist = fit(
    {"b": jnp.zeros((), jnp.float32)},
    rise,
    DATA,
    optimizer=optax.sgd(1.0),
    batch_size=1,
    validation_data=DATA,
    eval_fn=table_loss,
    progress=False,
    **kw,
  )
  return float(params["b"]), hist


@pytest.mark.parametrize(
  "patience, mode, stop, best",
  [
    (2, "min", 4, 2),  # 5, 3 (best), 4, 3: an equal value is no improvement
    (3, "min", 8, 8),  # 2 at step 5 and 1 at step 8 reset the count
    (2, "max", 3, 1),
    (None, "min", 8, 8),
  ],
)
def test_early_stopping_and_restore_best(capsys, patience, mode, stop, best):
  last, hist = run(early_stopping=patience, mode=mode)
  assert [r["step"] for r in hist] == list(range(1, stop + 1)) and last == stop
  assert ("early stopping at step" in capsys.readouterr().out) == (stop < len(TABLE) - 1)
  restored, hist = run(early_stopping=patience, mode=mode, restore_best=True)
  assert restored == best == hist.best("val_loss", mode)["step"]


def test_early_stopping_message_counts_evaluations(capsys):
  run(early_stopping=2)
  assert capsys.readouterr().out.strip() == "early stopping at step 4: val_loss has not improved for 2 evaluations"


def test_checkpoints_every_save_every_and_once_at_the_end(tmp_path, monkeypatch):
  saved = []
  save = Checkpointer.save
  monkeypatch.setattr(Checkpointer, "save", lambda self, step, state: (saved.append(step), save(self, step, state)))
  run(steps=7, checkpoint_dir=str(tmp_path / "a"), save_every=3, keep=10)
  assert saved == [3, 6, 7]
  saved.clear()
  run(steps=6, checkpoint_dir=str(tmp_path / "b"), save_every=3, keep=10)
  assert saved == [3, 6]  # the last step was saved by the policy already
  saved.clear()
  run(steps=8, eval_every=2, checkpoint_dir=str(tmp_path / "c"), keep=10)  # save_every defaults to eval_every
  assert saved == [2, 4, 6, 8]
  saved.clear()
  run(early_stopping=2, checkpoint_dir=str(tmp_path / "d"), save_every=3, keep=10)  # stops at step 4
  assert saved == [3, 4]
  assert Checkpointer(tmp_path / "d").all_steps() == [3, 4]


def test_progress_lines_when_stdout_is_not_a_terminal(capsys):
  data = {"x": np.ones((8, 1), np.float32)}
  loss = lambda p, b, k: jnp.mean((p * b["x"] - 2.0) ** 2)  # noqa: E731
  # Under pytest stdout is captured, not a terminal: the default prints one line per evaluation.
  fit(jnp.float32(0.0), loss, data, batch_size=4, steps=6, eval_every=3, validation_data=data)
  lines = capsys.readouterr().out.strip().splitlines()
  assert [line.split(":")[0] for line in lines] == ["step 3/6", "step 6/6"]
  assert all("val_loss" in line and "steps/s, ETA" in line for line in lines)
  fit(jnp.float32(0.0), loss, data, batch_size=4, steps=6, eval_every=3, progress=False)
  assert capsys.readouterr().out == ""
  with pytest.raises(ValueError, match="progress must be True, False, 'lines' or None; got 'loud'"):
    fit(jnp.float32(0.0), loss, data, batch_size=4, steps=6, progress="loud")


def test_an_interrupted_run_keeps_its_last_step(tmp_path):
  data = {"x": np.ones((8, 1), np.float32)}
  loss = lambda p, b, k: jnp.mean((p * b["x"] - 2.0) ** 2)  # noqa: E731

  def interrupt(record):
    if record["step"] == 3:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    fit(
      jnp.float32(0.0),
      loss,
      data,
      batch_size=4,
      steps=9,
      eval_every=3,
      save_every=2,
      progress=False,
      checkpoint_dir=str(tmp_path),
      callbacks=[interrupt],
    )
  # Step 2 was saved by the policy; step 3, where the run stopped, on the way out.
  assert Checkpointer(tmp_path).all_steps() == [2, 3]
  resumed, _ = fit(
    jnp.float32(0.0),
    loss,
    data,
    batch_size=4,
    steps=9,
    eval_every=3,
    save_every=2,
    progress=False,
    checkpoint_dir=str(tmp_path),
    resume=True,
  )
  straight, _ = fit(jnp.float32(0.0), loss, data, batch_size=4, steps=9, eval_every=3, progress=False)
  np.testing.assert_array_equal(resumed, straight)


@pytest.mark.parametrize("split_at", [2, 3, 4, 6])
def test_a_resumed_run_selects_and_stops_as_the_uninterrupted_one(tmp_path, split_at, capsys):
  """Patience and the best params are kept beside the checkpoints, so stopping halfway changes nothing."""
  whole, hist = run(early_stopping=3, restore_best=True)
  d = str(tmp_path / "ck")
  run(steps=split_at, early_stopping=3, restore_best=True, checkpoint_dir=d)
  resumed, hist2 = run(early_stopping=3, restore_best=True, checkpoint_dir=d, resume=True)
  assert resumed == whole == 8.0 and hist2.selected["step"] == hist.selected["step"] == 8
  # Patience 2 stops at step 4 (best: step 2). Resumed after the stop, there is nothing left to train.
  d2 = str(tmp_path / "ck2")
  first, _ = run(early_stopping=2, restore_best=True, checkpoint_dir=d2)
  capsys.readouterr()
  again, hist3 = run(early_stopping=2, restore_best=True, checkpoint_dir=d2, resume=True)
  assert first == again == 2.0 and len(hist3) == 0 and hist3.selected["step"] == 2
  assert "the run stopped early at step 4" in capsys.readouterr().out
