"""The data containers shared by every task, and the option checks.

Plain NumPy only: no JAX here, so the data code is cheap to import and test.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

KINDS = ("classify", "regress", "seq_classify", "lm")

# Stream ids for ``rng``: the splits draw from separate streams, so the test
# split does not change when n_train or n_val does.
TRAIN, TEST, EXTRA, VAL = 0, 1, 2, 3

# The unit of each metric a task reports, for figures printed beside baselines.
UNITS = {
  "loss": "nats",
  "mse": "squared target units",
  "rmse": "target units",
  "accuracy": "fraction correct",
  "bits_per_char": "bits per character",
}


# eq=False: the generated __eq__ would compare ndarrays and raise "truth value
# of an array is ambiguous"; identity equality (and hashing) is what is wanted.
@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """One split of a task: inputs, targets, and where the inputs are valid.

  Attributes:
    xs: ``(N, T, I)`` float32 inputs, or ``(N, T)`` int32 token ids when the
      task's kind is ``"lm"``.
    ys: targets; ``(N,)`` int32 for ``"classify"``, ``(N, O)`` float32 for
      ``"regress"``, ``(N, T)`` int32 for ``"seq_classify"`` and ``"lm"``.
    lengths: ``(N,)`` int32 valid lengths of right-padded rows, or ``None``
      when every row is ``T`` steps long. Padding steps are zero in ``xs``.
    mask: ``(N, T)`` bool, True where the input step is observed, or ``None``
      when every step is. Unobserved steps are zero in ``xs``.
  """

  xs: np.ndarray
  ys: np.ndarray
  lengths: np.ndarray | None = None
  mask: np.ndarray | None = None

  def __post_init__(self):
    n = self.xs.shape[0]
    if self.ys.shape[0] != n:
      raise ValueError(f"ys must have {n} rows like xs {self.xs.shape}; got shape {self.ys.shape}")
    if self.lengths is not None and self.lengths.shape != (n,):
      raise ValueError(f"lengths must have shape ({n},); got {self.lengths.shape}")
    if self.mask is not None and self.mask.shape != self.xs.shape[:2]:
      raise ValueError(f"mask must have shape {self.xs.shape[:2]}; got {self.mask.shape}")

  @property
  def n(self) -> int:
    """Number of sequences ``N``."""
    return self.xs.shape[0]


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
  """A training task: its three splits, its headline metric and the baselines to beat.

  Attributes:
    name: the registry name, e.g. ``"adding"``.
    kind: ``"classify"`` (one label per sequence, read from the last valid
      step), ``"regress"`` (one target vector per sequence, MSE),
      ``"seq_classify"`` (one class per step) or ``"lm"`` (next token).
    input_size: ``I``; for ``"lm"``, the vocabulary size (the model one-hots
      the token ids).
    num_outputs: the number of classes, or the regression output size.
    train: the training split.
    val: the validation split, for model selection (early stopping, the best
      checkpoint, tuning the presets).
    test: the held-out split, read once at the end of a run.
    baselines: named trivial baselines measured on the test split (or exact
      values where the docstring says so). Each name ends in ``_<metric>``,
      the metric it compares with, and is in that metric's unit, e.g.
      ``persistence_rmse``.
    info: anything else (normalization constants, vocabulary, years).
    metric: the headline metric, a key of the evaluation metrics, e.g.
      ``"accuracy"`` or ``"rmse"``.
    units: the unit of each metric the task reports, e.g. ``{"rmse": "sunspot
      number", ...}``; :data:`UNITS` fills in the ones not given.
  """

  name: str
  kind: str
  input_size: int
  num_outputs: int
  train: Split
  val: Split
  test: Split
  baselines: dict[str, float]
  info: dict
  metric: str
  units: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"kind must be one of {list(KINDS)}; got {self.kind!r}")
    # The unit of every metric, the task's own first: frozen, so set through object.__setattr__.
    object.__setattr__(self, "units", {**UNITS, **self.units})
    if self.metric not in self.units:
      raise ValueError(f"metric must be one of {sorted(self.units)}; got {self.metric!r}")
    for name in self.baselines:
      if not any(name.endswith(f"_{m}") for m in self.units):
        raise ValueError(f"baseline {name!r} must end in _<metric>, one of {sorted(self.units)}")

  @property
  def mode(self) -> str:
    """``"max"`` when a higher :attr:`metric` is better, else ``"min"``."""
    return "max" if self.metric == "accuracy" else "min"

  def baselines_of(self, metric: str | None = None) -> dict[str, float]:
    """The baselines comparable with ``metric`` (default: the headline), keyed by their name less the suffix."""
    metric = metric or self.metric
    return {k[: -len(metric) - 1]: v for k, v in self.baselines.items() if k.endswith(f"_{metric}")}


def rng(seed: int, stream: int) -> np.random.Generator:
  """A generator for one ``stream`` (``TRAIN``, ``TEST``, ``EXTRA``) of ``seed``."""
  return np.random.default_rng([seed, stream])


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    raise ValueError(f"{name} must be {expected}; got {value!r}")
  return int(value)


def check_seed(seed: Any) -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative int; got {seed!r}")
  return int(seed)


def check_fraction(name: str, value: Any, *, low_open: bool = False) -> float:
  """Checks ``value`` is a float in ``[0, 1)`` (``(0, 1)`` when ``low_open``)."""
  ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
  ok = ok and math.isfinite(value) and (0 < value if low_open else 0 <= value) and value < 1
  if not ok:
    interval = "(0, 1)" if low_open else "[0, 1)"
    raise ValueError(f"{name} must be a fraction in {interval}; got {value!r}")
  return float(value)


def drop_steps(split: Split, fraction: float, gen: np.random.Generator) -> Split:
  """Marks each step of ``split`` missing with probability ``fraction``.

  Missing steps get ``mask`` False and zero inputs, so a model that ignores the
  mask sees the same zeros that a zero-filled dataset would give it.
  """
  if fraction == 0:
    return split
  mask = gen.random(split.xs.shape[:2]) >= fraction  # (N, T)
  xs = np.where(mask[..., None], split.xs, 0).astype(split.xs.dtype)
  return dataclasses.replace(split, xs=xs, mask=mask)
