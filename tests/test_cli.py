"""The jaxlstm command: bad input gets one line and exit code 2; a tiny run trains, resumes, evaluates."""

import json
import os
import subprocess
import sys

import pytest

from jaxlstm.cli import main

pytestmark = pytest.mark.standard_promotion


def run_cli(*args):
  proc = subprocess.run([sys.executable, "-m", "jaxlstm", *args], capture_output=True, text=True, timeout=300)
  return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize(
  "args, message",
  [
    (["train", "--out", "x", "--cell", "tcn"], "argument --cell: invalid choice: 'tcn'"),
    (["train", "--out", "x", "--hidden", "0"], "argument --hidden: expected a positive integer; got '0'"),
    (["train", "--out", "x", "--steps", "many"], "argument --steps: expected a positive integer; got 'many'"),
    (["train"], "the following arguments are required: --out"),
    (["fly"], "argument command: invalid choice: 'fly'"),
  ],
)
def test_bad_flags_one_line_exit_2(capsys, args, message):
  with pytest.raises(SystemExit) as e:
    main(args)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert message in err and len(err.strip().splitlines()) == 1


def test_unknown_task_and_missing_file(capsys, tmp_path):
  assert main(["train", "--task", "chess", "--out", str(tmp_path / "a"), "--quiet"]) == 2
  err = capsys.readouterr().err.strip()
  assert "unknown task 'chess'" in err and len(err.splitlines()) == 1
  assert (
    main(["train", "--task", "text", "--text", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "b"), "--quiet"])
    == 2
  )
  err = capsys.readouterr().err.strip()
  assert "nope.txt" in err and len(err.splitlines()) == 1
  assert main(["eval", "--out", str(tmp_path / "missing")]) == 2
  assert "config.json does not exist" in capsys.readouterr().err


def test_train_resume_eval_in_a_subprocess(tmp_path):
  out = str(tmp_path / "run")
  base = [
    "--task",
    "adding",
    "--seq-len",
    "8",
    "--n-train",
    "64",
    "--n-val",
    "16",
    "--n-test",
    "32",
    "--hidden",
    "8",
    "--batch-size",
    "16",
    "--eval-every",
    "4",
    "--out",
    out,
  ]
  # Not a terminal: one progress line per evaluation, with the validation metrics, speed and ETA.
  code, stdout, stderr = run_cli("train", *base, "--steps", "4")
  assert code == 0, stderr
  progress = [line for line in stdout.splitlines() if line.startswith("step 4/4:")]
  assert len(progress) == 1 and "val_mse" in progress[0] and "steps/s" in progress[0] and "ETA" in progress[0]
  code, stdout, stderr = run_cli("train", *base, "--steps", "8", "--resume", "--quiet")
  assert code == 0, stderr
  assert not any(line.startswith("step 8/8") for line in stdout.splitlines())  # --quiet
  with open(os.path.join(out, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  val = [r for r in records if r.get("split") != "test"]
  test = [r for r in records if r.get("split") == "test"]
  assert [r["step"] for r in val] == [4, 8] and {"val_mse", "val_rmse", "loss"} <= set(val[-1])
  # Each call ends with the test figures of the params it selected, beside the baselines.
  assert len(test) == 2 and {"test_mse", "test_rmse"} <= set(test[-1])
  assert abs(test[-1]["baselines"]["trivial_mse"] - 1 / 6) < 1e-9
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  best = min(val, key=lambda r: r["val_loss"])  # the adding preset restores the best validation step
  assert summary["selected_step"] == best["step"] == test[-1]["step"] and summary["last_step"] == 8
  assert summary["test"]["test_mse"] == test[-1]["test_mse"] and summary["metric"] == "mse"
  assert summary["val"]["val_mse"] == best["val_mse"] and summary["baselines"]["trivial_mse"] == 1 / 6
  assert summary["units"]["mse"] == "squared target units" and summary["train_seconds"] > 0
  assert f"test mse {test[-1]['test_mse']:.4g} squared target units (trivial 0.1667" in stdout
  with open(os.path.join(out, "config.json")) as f:
    cfg = json.load(f)
  assert cfg["hidden"] == 8 and cfg["steps"] == 8
  code, stdout, stderr = run_cli("eval", "--out", out, "--json")
  assert code == 0, stderr
  result = json.loads(stdout)
  assert result["step"] == best["step"]
  assert abs(result["mse"] - test[-1]["test_mse"]) < 1e-6


def test_sweep_command_end_to_end(tmp_path, capsys):
  out = tmp_path / "sweep"
  assert (
    main(
      [
        "sweep",
        "--task",
        "adding",
        "--seq-len",
        "6",
        "--n-train",
        "32",
        "--n-val",
        "8",
        "--n-test",
        "16",
        "--batch-size",
        "16",
        "--hidden-sizes",
        "4,8",
        "--lrs",
        "1e-2",
        "--seeds",
        "2",
        "--steps",
        "2",
        "--eval-every",
        "2",
        "--out",
        str(out),
        "--quiet",
      ]
    )
    == 0
  )
  assert f"sweep written to {out}" in capsys.readouterr().out
  with open(out / "sweep.json") as f:
    report = json.load(f)
  assert sorted({(r["hidden"], r["seed"]) for r in report["rows"]}) == [(4, 0), (4, 1), (8, 0), (8, 1)]
  assert [s["hidden"] for s in report["summary"]] == [4, 8] and all(s["seeds"] == 2 for s in report["summary"])
  assert report["summary"][0]["metric"] == "val_rmse"  # selection reads the validation split, never test
  assert (out / "sweep.md").exists() and (out / "sweep.png").exists()


def test_missing_extra_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
  # None in sys.modules makes the import fail, as on a machine without scikit-learn.
  monkeypatch.setitem(sys.modules, "sklearn", None)
  monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
  assert main(["train", "--task", "digits", "--steps", "1", "--out", str(tmp_path / "d"), "--quiet"]) == 1
  err = capsys.readouterr().err.strip()
  assert err == (
    "jaxlstm train: error: task 'digits' needs the sklearn package, which is not installed: "
    "pip install 'jaxlstm[tasks]'"
  )


TINY = [
  "--task",
  "adding",
  "--seq-len",
  "6",
  "--n-train",
  "32",
  "--n-val",
  "8",
  "--n-test",
  "16",
  "--hidden",
  "4",
  "--batch-size",
  "16",
  "--eval-every",
  "2",
  "--no-restore-best",
  "--quiet",
]


def test_a_run_directory_is_never_reused_silently(tmp_path, capsys):
  out = str(tmp_path / "run")
  assert main(["train", *TINY, "--steps", "4", "--out", out]) == 0
  capsys.readouterr()
  # A second run into the same directory would have its checkpoints mixed with the first one's.
  assert main(["train", *TINY, "--steps", "2", "--out", out]) == 2
  err = capsys.readouterr().err.strip()
  assert err == (
    f"jaxlstm train: error: {out} already holds a run (config.json, metrics.jsonl, checkpoints, "
    "summary.json); "
    "pass --resume to continue it or --overwrite to replace it"
  )
  assert main(["train", *TINY, "--steps", "2", "--out", out, "--overwrite"]) == 0
  capsys.readouterr()
  assert main(["eval", "--out", out]) == 0
  assert capsys.readouterr().out.startswith("step 2:")  # the new run's checkpoint, not the old step 4
  assert main(["train", *TINY, "--steps", "2", "--out", out, "--overwrite", "--resume"]) == 2
  assert "not both" in capsys.readouterr().err


def test_resume_refuses_flags_that_contradict_the_saved_run(tmp_path, capsys):
  out = str(tmp_path / "run")
  assert main(["train", *TINY, "--steps", "2", "--out", out]) == 0
  capsys.readouterr()
  assert main(["train", "--resume", "--out", out, "--hidden", "8", "--cell", "gru", "--seq-len", "9", "--quiet"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith(f"jaxlstm train: error: --resume continues the run in {out} with its saved config")
  for part in (
    "--hidden gives hidden=8 (the run has 4)",
    "--cell gives cell='gru' (the run has 'lstm')",
    "task option T=9 (the run has 6)",
  ):
    assert part in err, part
  # Restating the saved values, extending --steps and changing how this process runs are fine.
  assert main(["train", "--resume", "--out", out, "--hidden", "4", "--steps", "4", "--quiet"]) == 0
  assert "at step 4 (the last step)" in capsys.readouterr().out


def test_help_shows_defaults_and_every_task(capsys):
  with pytest.raises(SystemExit):
    main(["train", "--help"])
  text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # help wraps at hyphens
  assert "peak learning rate (default: the task's preset, else 0.001)" in text
  assert "training steps (default: the task's preset, else 2000)" in text and "--show-config" in text
  from jaxlstm.tasks import TASKS

  assert all(name in text for name in TASKS) and "adding-var" in text


def test_bad_dropout_writes_nothing_and_eval_names_the_step_once(tmp_path, capsys):
  out = tmp_path / "run"
  assert main(["train", *TINY, "--steps", "2", "--dropout", "1.5", "--out", str(out)]) == 2
  assert "dropout must be in [0, 1); got 1.5" in capsys.readouterr().err
  assert not out.exists()
  assert main(["train", *TINY, "--steps", "2", "--out", str(out)]) == 0
  capsys.readouterr()
  assert main(["eval", "--out", str(out)]) == 0
  first = capsys.readouterr().out.splitlines()[0]
  assert first.startswith("step 2: ") and first.count("step") == 1


def test_presets_resolve_and_flags_override_them(capsys, tmp_path):
  from jaxlstm.presets import PRESETS

  out = str(tmp_path / "never")
  assert main(["train", "--task", "copy", "--show-config", "--out", out]) == 0
  cfg = json.loads(capsys.readouterr().out)
  for key, value in PRESETS["copy"].items():
    assert cfg[key] == value, key
  assert (
    main(
      ["train", "--task", "copy", "--lr", "0.5", "--seq-len", "7", "--clip-norm", "0", "--show-config", "--out", out]
    )
    == 0
  )
  cfg = json.loads(capsys.readouterr().out)
  assert (cfg["lr"], cfg["task_options"], cfg["clip_norm"]) == (0.5, {"T": 7}, None)
  assert cfg["hidden"] == PRESETS["copy"]["hidden"] and cfg["steps"] == PRESETS["copy"]["steps"]
  assert not os.path.exists(out)  # --show-config writes nothing


def test_weight_decay_needs_adamw(tmp_path, capsys):
  assert main(["train", *TINY, "--optimizer", "adam", "--weight-decay", "0.1", "--out", str(tmp_path / "r")]) == 2
  assert "weight_decay needs optimizer 'adamw'" in capsys.readouterr().err
  assert not (tmp_path / "r").exists()


def test_regularizer_flags_travel_with_the_run(tmp_path, capsys):
  out = str(tmp_path / "run")
  assert (
    main(
      [
        "train",
        *TINY,
        "--steps",
        "2",
        "--recurrent-dropout",
        "0.2",
        "--zoneout",
        "0.1",
        "--weight-drop",
        "0.3",
        "--input-dropout",
        "0.1",
        "--out",
        out,
      ]
    )
    == 0
  )
  with open(os.path.join(out, "config.json")) as f:
    cfg = json.load(f)
  assert (cfg["recurrent_dropout"], cfg["zoneout"], cfg["weight_drop"], cfg["input_dropout"]) == (0.2, 0.1, 0.3, 0.1)
  capsys.readouterr()
  assert main(["train", "--resume", "--out", out, "--zoneout", "0.5", "--quiet"]) == 2
  assert "--zoneout gives zoneout=0.5 (the run has 0.1)" in capsys.readouterr().err
  assert main(["train", *TINY, "--steps", "2", "--zoneout", "1.0", "--out", str(tmp_path / "bad")]) == 2
  assert "zoneout must be a rate in [0, 1); got 1.0" in capsys.readouterr().err
  assert main(["eval", "--out", out]) == 0  # evaluation: zoneout's expectation, no masks
