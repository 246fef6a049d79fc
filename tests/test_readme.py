"""Every ``jaxlstm`` command that README.md documents runs, as written, with tiny sizes appended.

The commands are read from the README's ``bash`` blocks, so a flag renamed in
the code and not in the README fails here. Alternatives (``a|b``) take their
first choice and optional parts (``[--seed 0]``) are kept; flags appended after
the documented ones shrink the data and the steps (argparse keeps the last
value of a repeated flag).
"""

import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from jaxlstm.cli import main

pytestmark = pytest.mark.standard_promotion

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# Per task, what makes a run tiny: the task's own size options, then few steps.
TINY_TASK = {
  "adding": ["--seq-len", "6", "--n-train", "32", "--n-val", "8", "--n-test", "8"],
  "copy": ["--seq-len", "3", "--n-train", "32", "--n-val", "8", "--n-test", "8"],
  "digits": [],
  "pixel-digits": [],
  "sunspots": [],
  "text": ["--seq-len", "20", "--option", "max_chars=4000"],
}
TINY_STEPS = ["--steps", "2", "--eval-every", "2", "--batch-size", "8", "--quiet"]


def readme_commands() -> list[str]:
  """The ``jaxlstm ...`` lines of the README's bash blocks, continuation lines joined, comments dropped."""
  commands = []
  for block in re.findall(r"```bash\n(.*?)```", README, re.S):
    text = block.replace("\\\n", " ")
    for line in text.splitlines():
      line = line.split(" #")[0].strip()
      if "&&" in line:  # the install-and-run line: its last part is the command
        line = line.split("&&")[-1].strip()
      line = re.split(r"\s{2,}(?=jaxlstm )", line)[0]  # two hosts side by side: the first one's
      if line.startswith("jaxlstm "):
        commands.append(line)
  return commands


def concrete(command: str, tmp: pathlib.Path) -> list[str]:
  """The argv of a documented command: first alternatives, optional parts kept, run directories in ``tmp``."""
  command = re.sub(r"\[([^\]|]*)\]", r"\1", command)  # [--seed 0] -> --seed 0
  command = re.sub(r"\[[^\]]*\]", "", command)  # [--resume | --overwrite]: neither, a fresh run
  command = re.sub(r"(\S+?)(\|\S+)+", r"\1", command)  # a|b|c -> a
  argv = shlex.split(command)[1:]
  return [str(tmp / a) if a.startswith("runs/") else a for a in argv]


def test_the_readme_documents_the_commands():
  names = [c.split()[1] for c in readme_commands()]
  assert {"train", "eval", "sample", "sweep"} <= set(names), names


def test_every_readme_command_runs(tmp_path, capsys):
  commands = readme_commands()
  # The sample command reads a text run: make the one it names first, as a reader would have.
  assert main(["train", "--task", "text", *TINY_TASK["text"], *TINY_STEPS, "--out", str(tmp_path / "runs/text")]) == 0
  for command in commands:
    argv = concrete(command, tmp_path / "")
    sub = argv[0]
    if sub in ("train", "sweep"):
      task = argv[argv.index("--task") + 1] if "--task" in argv else "adding"
      argv += TINY_TASK[task] + TINY_STEPS
      if sub == "sweep":
        argv += ["--hidden-sizes", "4", "--seeds", "1", "--lrs", "1e-2"]
      if sub == "train" and "--show-config" not in argv:
        argv += ["--overwrite"]  # two commands of the README may name the same directory
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, (command, err)
    if sub == "train" and "--show-config" not in argv:
      assert "(best on validation)" in out or "(the last step)" in out, (command, out)


def test_bench_learning_regenerates_its_table(tmp_path):
  """``python bench/learning.py``, the README table's command, end to end on one tiny task."""
  out = tmp_path / "table"
  proc = subprocess.run(
    [
      sys.executable,
      str(ROOT / "bench" / "learning.py"),
      "--tasks",
      "adding",
      "--seeds",
      "2",
      "--runs",
      str(tmp_path / "runs"),
      "--out",
      str(out),
      "--",
      *TINY_TASK["adding"],
      "--steps",
      "2",
      "--eval-every",
      "2",
      "--batch-size",
      "8",
    ],
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  table = (tmp_path / "table.md").read_text()
  assert "| adding (T=6, n_train=32, n_val=8, n_test=8) | mse (squared target units) |" in table
  assert "trivial 0.1667" in table
  assert "`python bench/learning.py -- --seq-len 6" in table and "seeds [0, 1]" in table
