"""Per-task training presets: the settings with which each task learns as shipped.

``jaxlstm train --task X --out D`` with no other flag trains with ``PRESETS[X]``
on top of :class:`~jaxlstm.experiment.RunConfig`'s defaults; a flag given on
the command line (or a keyword given to :func:`resolve`) overrides the preset.
The resolved values are what ``config.json`` records and what
``jaxlstm train --task X --show-config`` prints.

The presets were chosen by measurement over seeds on the validation split
(``jaxlstm sweep`` and ``python bench/learning.py``); the README's tasks
table is the output of ``bench/learning.py`` at these presets.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxlstm.experiment import RunConfig

# Every preset selects on the validation split: restore_best returns the params of the best evaluation.
PRESETS: dict[str, dict[str, Any]] = {
  "keras-example": {"hidden": 32, "steps": 300, "eval_every": 50, "batch_size": 64},
  "adding": {"hidden": 64, "lr": 1e-2, "clip_norm": 1.0, "steps": 2000, "eval_every": 250, "restore_best": True},
  "adding-var": {"hidden": 64, "lr": 1e-2, "clip_norm": 1.0, "steps": 2000, "eval_every": 250, "restore_best": True},
  "copy": {
    "task_options": {"T": 20},
    "hidden": 128,
    "lr": 1e-2,
    "schedule": "cosine",
    "warmup": 200,
    "clip_norm": 1.0,
    "steps": 12000,
    "eval_every": 1000,
    "restore_best": True,
  },
  "digits": {
    "hidden": 256,
    "lr": 1e-2,
    "schedule": "cosine",
    "warmup": 100,
    "optimizer": "adamw",
    "weight_decay": 1e-4,
    "steps": 3000,
    "eval_every": 250,
    "restore_best": True,
  },
  "pixel-digits": {
    "hidden": 128,
    "lr": 3e-3,
    "schedule": "cosine",
    "warmup": 100,
    "optimizer": "adamw",
    "weight_decay": 1e-4,
    "steps": 3000,
    "eval_every": 250,
    "restore_best": True,
  },
  "sunspots": {
    "hidden": 64,
    "lr": 1e-2,
    "optimizer": "adamw",
    "weight_decay": 1e-2,
    "batch_size": 32,
    "steps": 1000,
    "eval_every": 20,
    "early_stopping": 15,
    "restore_best": True,
  },
  # Stateful: at equal steps and seeds, TBPTT over streams lowers the test bits per character with the test
  # text read in order (1.697, 1.725, 1.699 against 1.758, 1.768, 1.775 for the stateless preset's models at
  # 4000 steps, seeds 0-2; 2.20 and 2.24 against 2.29 at 1500 steps), though a window read alone from the
  # initial state does worse (1.875-1.885 against 1.823-1.840). The README's tasks section has the figures.
  "text": {
    "hidden": 128,
    "lr": 5e-3,
    "schedule": "cosine",
    "warmup": 100,
    "steps": 4000,
    "eval_every": 500,
    "restore_best": True,
    "stateful": True,
  },
}


def preset(task: str) -> dict[str, Any]:
  """The preset of ``task``: the :class:`RunConfig` fields it sets (a copy).

  Raises:
    ValueError: for an unknown ``task``.

  Example:
    >>> from jaxlstm.presets import preset
    >>> preset("adding")["lr"]
    0.01
  """
  from jaxlstm.tasks import TASKS

  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; choose from {sorted(TASKS)}")
  return {k: dict(v) if isinstance(v, dict) else v for k, v in PRESETS.get(task, {}).items()}


def resolve(task: str, **overrides: Any) -> RunConfig:
  """The :class:`RunConfig` of ``task``: its defaults, then the task's preset, then ``overrides``.

  ``task_options`` merge key by key, so that ``task_options={"n_train": 100}``
  keeps the preset's other task options.

  Raises:
    ValueError: for an unknown ``task``.
    TypeError: for an override that is not a field of :class:`RunConfig`.

  Example:
    >>> from jaxlstm.presets import resolve
    >>> cfg = resolve("copy", hidden=64)
    >>> cfg.hidden, cfg.lr, cfg.task_options
    (64, 0.01, {'T': 20})
    >>> resolve("copy", task_options={"T": 100}).task_options
    {'T': 100}
    >>> resolve("copy", steps=50).warmup  # the preset's 200 warmup steps, scaled to a 50-step run
    5
  """
  fields = {f.name for f in dataclasses.fields(RunConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise TypeError(f"{unknown[0]!r} is not a RunConfig field; the fields are {sorted(fields)}")
  values = {**preset(task), **{k: v for k, v in overrides.items() if k != "task_options"}}
  values["task_options"] = {**preset(task).get("task_options", {}), **overrides.get("task_options", {})}
  # A preset's warmup is for the preset's steps: a shorter run given with --steps warms up for a tenth of
  # it instead of failing (the resolved warmup is what config.json records).
  steps = values.get("steps", RunConfig.steps)
  if "warmup" not in overrides and values.get("warmup", 0) >= steps:
    values["warmup"] = steps // 10
  return RunConfig(task=task, **values)
