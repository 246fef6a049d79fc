"""Training tasks and their data, as plain NumPy (no JAX), with a registry.

Every task is a function ``f(*, seed=0, **options) -> Task``; the same seed and
options always give the same arrays. Each task has train, validation and test
splits: model selection reads the validation split only, and a run reads the
test split once, at its end. :func:`make_task` looks one up by name:

  >>> from jaxlstm.tasks import make_task
  >>> task = make_task("adding", T=50, n_train=8, n_test=4)
  >>> task.kind, task.train.xs.shape, task.train.ys.shape
  ('regress', (8, 50, 2), (8, 1))

Tasks (kind; ``xs`` / ``ys`` of each split):

* ``keras-example`` (classify; ``(N, T, 10)`` noise / ``(N,)`` random labels)
* ``adding``, ``adding-var`` (regress; ``(N, T, 2)`` / ``(N, 1)``)
* ``copy`` (seq_classify; ``(N, T+20, 10)`` one-hot / ``(N, T+20)``)
* ``digits`` (classify; ``(N, 8, 8)`` image rows / ``(N,)``)
* ``pixel-digits`` (classify; ``(N, 64, 1)`` pixels one at a time / ``(N,)``)
* ``sunspots`` (regress; ``(N, window, 1)`` / ``(N, 1)``, normalized)
* ``text`` (lm; ``(N, T)`` char ids / ``(N, T)`` next ids)

The digits tasks and ``sunspots`` load data bundled with scikit-learn and
statsmodels; those are imported only when the task is built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from jaxlstm.tasks._adding import adding, adding_var
from jaxlstm.tasks._base import KINDS, UNITS, Split, Task, check_seed
from jaxlstm.tasks._copy import copy_task
from jaxlstm.tasks._digits import digits, pixel_digits
from jaxlstm.tasks._keras_example import keras_example
from jaxlstm.tasks._sunspots import sunspots
from jaxlstm.tasks._text import decode, encode, text

TASKS: dict[str, Callable[..., Task]] = {
  "keras-example": keras_example,
  "adding": adding,
  "adding-var": adding_var,
  "copy": copy_task,
  "digits": digits,
  "pixel-digits": pixel_digits,
  "sunspots": sunspots,
  "text": text,
}


def options(name: str) -> dict[str, object]:
  """The options of task ``name`` with their defaults (``seed`` excluded).

  Raises:
    ValueError: for an unknown ``name``.

  Example:
    >>> from jaxlstm.tasks import options
    >>> options("adding")
    {'T': 100, 'n_train': 10000, 'n_val': 1000, 'n_test': 1000, 'variable_length': False}
  """
  fn = _lookup(name)
  return {p.name: p.default for p in inspect.signature(fn).parameters.values() if p.name != "seed"}


def _lookup(name: str) -> Callable[..., Task]:
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
  return TASKS[name]


def make_task(name: str, *, seed: int = 0, **opts) -> Task:
  """Builds the task registered as ``name``.

  Args:
    name: a key of :data:`TASKS`.
    seed: a non-negative int; the same seed and options give the same data.
    **opts: the task's options (see :func:`options`), e.g. ``T=200``.

  Returns:
    The :class:`Task`.

  Raises:
    ValueError: for an unknown ``name``, or an option with a bad value.
    TypeError: for an option the task does not have.
    FileNotFoundError: for ``text`` with a ``path`` that does not exist.

  Example:
    >>> from jaxlstm.tasks import make_task
    >>> task = make_task("copy", T=5, n_train=4, n_test=2, seed=1)
    >>> task.kind, task.train.xs.shape, task.train.ys.shape
    ('seq_classify', (4, 25, 10), (4, 25))
    >>> make_task("adding", Tee=50)
    Traceback (most recent call last):
    TypeError: task 'adding' has no option 'Tee'; its options are ['T', 'n_test', 'n_train', 'n_val', 'variable_length']
  """
  fn = _lookup(name)
  seed = check_seed(seed)
  known = options(name)
  unknown = sorted(set(opts) - set(known))
  if unknown:
    raise TypeError(f"task {name!r} has no option {unknown[0]!r}; its options are {sorted(known)}")
  return fn(seed=seed, **opts)


__all__ = [
  "KINDS",
  "UNITS",
  "Split",
  "TASKS",
  "Task",
  "adding",
  "adding_var",
  "copy_task",
  "decode",
  "digits",
  "encode",
  "keras_example",
  "make_task",
  "options",
  "pixel_digits",
  "sunspots",
  "text",
]
