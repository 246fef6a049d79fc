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
  params, hist = fit({"b": jnp.zeros((), jnp.float32)}, rise, DATA, optimizer=optax.sgd(1.0), batch_size=1,
                     validation_data=DATA, eval_fn=table_loss, progress=False, **kw)
  return float(params["b"]), hist


@pytest.mark.parametrize("patience, mode, stop, best", [
    (2, "min", 4, 2),  # 5, 3 (best), 4, 3: an equal value is no improvement
    (3, "min", 8, 8),  # 2 at step 5 and 1 at step 8 reset the count
    (2, "max", 3, 1),
    (None, "min", 8, 8),
])
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
