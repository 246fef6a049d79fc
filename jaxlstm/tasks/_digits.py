"""``digits`` and ``pixel-digits``: scikit-learn's bundled 8x8 handwritten digits as sequences.

``digits`` reads each image row by row (8 steps of 8 pixels); ``pixel-digits``
reads it one pixel at a time (64 steps of 1 pixel), the offline stand-in for
sequential MNIST (Le, Jaitly & Hinton 2015; Cooijmans et al. 2016). The data
ships inside scikit-learn, so no download is needed.
"""

from __future__ import annotations

import numpy as np

from jaxlstm._src.extras import require
from jaxlstm.tasks._base import EXTRA, TEST, TRAIN, VAL, Split, Task, check_fraction, drop_steps, rng

NUM_CLASSES = 10


def _stratified_split(labels: np.ndarray, fractions: tuple[float, ...], gen: np.random.Generator):
  """Index arrays ``(rest, *held_out)``: each class puts ``round(n_c * f)`` of its images in each held-out part."""
  parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
  for c in np.unique(labels):
    idx = gen.permutation(np.flatnonzero(labels == c))
    start = 0
    for k, f in enumerate(fractions):
      n = int(round(len(idx) * f))
      parts[k + 1].append(idx[start : start + n])
      start += n
    parts[0].append(idx[start:])
  # Shuffled, so that batches taken in order are not sorted by class.
  return tuple(gen.permutation(np.concatenate(p)) for p in parts)


def _load(task: str) -> tuple[np.ndarray, np.ndarray]:
  """``(images (1797, 8, 8) float32 in [0, 1], labels (1797,) int32)``."""
  # Only these tasks need scikit-learn.
  bunch = require("sklearn.datasets", extra="tasks", needed_by=f"task {task!r}").load_digits()
  return (bunch.data / 16.0).reshape(-1, 8, 8).astype(np.float32), bunch.target.astype(np.int32)


def _digits_task(
  name: str, seq: np.ndarray, ys: np.ndarray, seed: int, val_fraction: float, test_fraction: float, missing: float
) -> Task:
  val_fraction = check_fraction("val_fraction", val_fraction)
  test_fraction = check_fraction("test_fraction", test_fraction, low_open=True)
  missing = check_fraction("missing", missing)
  train_idx, val_idx, test_idx = _stratified_split(ys, (val_fraction, test_fraction), rng(seed, EXTRA))
  if len(test_idx) == 0 or (val_fraction > 0 and len(val_idx) == 0) or len(np.unique(ys[train_idx])) < NUM_CLASSES:
    raise ValueError(
      f"val_fraction and test_fraction must leave every class in train and some images in each "
      f"held-out split; got {val_fraction} and {test_fraction} ({len(train_idx)} train, "
      f"{len(val_idx)} validation, {len(test_idx)} test images)"
    )
  train = drop_steps(Split(seq[train_idx], ys[train_idx]), missing, rng(seed, TRAIN))
  val = drop_steps(Split(seq[val_idx], ys[val_idx]), missing, rng(seed, VAL))
  test = drop_steps(Split(seq[test_idx], ys[test_idx]), missing, rng(seed, TEST))

  prior = np.bincount(train.ys, minlength=NUM_CLASSES) / train.n  # (10,)
  majority = int(np.argmax(prior))
  return Task(
    name=name,
    kind="classify",
    input_size=seq.shape[-1],
    num_outputs=NUM_CLASSES,
    train=train,
    val=val,
    test=test,
    metric="accuracy",
    baselines={
      "majority_accuracy": float(np.mean(test.ys == majority)),
      "prior_loss": float(-np.mean(np.log(prior[test.ys]))),
    },
    info={
      "val_fraction": val_fraction,
      "test_fraction": test_fraction,
      "missing": missing,
      "majority_class": majority,
      "source": "sklearn.datasets.load_digits",
      "scale": "pixels / 16",
    },
  )


def digits(*, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2, missing: float = 0.0) -> Task:
  """8x8 digits read row by row: ``xs (N, 8, 8)`` in ``[0, 1]``, ``ys (N,)`` in ``[0, 10)``.

  Args:
    seed: picks the stratified train/validation/test split and the missing rows.
    val_fraction: fraction of each class held out for validation, in ``[0, 1)``.
    test_fraction: fraction of each class held out for test, in ``(0, 1)``.
    missing: probability, in ``[0, 1)``, that each image row (time step) is
      dropped: its ``mask`` entry is False and its pixels are zero. Applied to
      every split; 0 leaves ``mask`` as None. A row may lose all its steps.

  Returns:
    A ``"classify"`` :class:`Task` with ``input_size=8``, ``num_outputs=10``,
    headline metric ``accuracy`` and baselines ``majority_accuracy`` (the most
    frequent training class, scored on test) and ``prior_loss`` (the training
    class frequencies as a prediction: cross-entropy on test, in nats).

  Example:
    >>> task = digits()
    >>> task.train.xs.shape, task.val.xs.shape, task.test.xs.shape
    ((1259, 8, 8), (179, 8, 8), (359, 8, 8))
  """
  images, ys = _load("digits")
  return _digits_task("digits", images, ys, seed, val_fraction, test_fraction, missing)


def pixel_digits(*, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2, missing: float = 0.0) -> Task:
  """8x8 digits read one pixel at a time, row-major: ``xs (N, 64, 1)``, ``ys (N,)``.

  The same images, splits and baselines as :func:`digits` with the same
  arguments; only the reading order differs, so the label depends on the
  whole 64-step sequence.

  Args:
    seed: picks the stratified train/validation/test split and the missing pixels.
    val_fraction: fraction of each class held out for validation, in ``[0, 1)``.
    test_fraction: fraction of each class held out for test, in ``(0, 1)``.
    missing: probability, in ``[0, 1)``, that each pixel (time step) is dropped.

  Returns:
    A ``"classify"`` :class:`Task` like :func:`digits`'s, with ``input_size=1``.

  Example:
    >>> pixel_digits().train.xs.shape
    (1259, 64, 1)
  """
  images, ys = _load("pixel-digits")
  return _digits_task("pixel-digits", images.reshape(-1, 64, 1), ys, seed, val_fraction, test_fraction, missing)
