"""``digits``: scikit-learn's bundled 8x8 handwritten digits, read row by row.

Each image is an 8-step sequence of 8-pixel rows. The data ships inside
scikit-learn, so no download is needed.
"""

from __future__ import annotations

import numpy as np

from jaxlstm._src.extras import require
from jaxlstm.tasks._base import EXTRA, TEST, TRAIN, Split, Task, check_fraction, drop_steps, rng

NUM_CLASSES = 10


def _stratified_split(labels: np.ndarray, test_fraction: float, gen: np.random.Generator):
  """Indices ``(train, test)``; each class puts ``round(n_c * test_fraction)`` in test."""
  train, test = [], []
  for c in np.unique(labels):
    idx = gen.permutation(np.flatnonzero(labels == c))
    k = int(round(len(idx) * test_fraction))
    test.append(idx[:k])
    train.append(idx[k:])
  # Shuffled, so that batches taken in order are not sorted by class.
  return gen.permutation(np.concatenate(train)), gen.permutation(np.concatenate(test))


def digits(*, seed: int = 0, test_fraction: float = 0.25, missing: float = 0.0) -> Task:
  """8x8 digits as sequences: ``xs (N, 8, 8)`` in ``[0, 1]``, ``ys (N,)`` in ``[0, 10)``.

  Args:
    seed: picks the stratified train/test split and the missing rows.
    test_fraction: fraction of each class held out for test, in ``(0, 1)``.
    missing: probability, in ``[0, 1)``, that each image row (time step) is
      dropped: its ``mask`` entry is False and its pixels are zero. Applied to
      both splits; 0 leaves ``mask`` as None. A row may lose all its steps.

  Returns:
    A ``"classify"`` :class:`Task` with ``input_size=8``, ``num_outputs=10``
    and baselines ``majority_accuracy`` (the most frequent training class,
    scored on test) and ``prior_xent`` (the training class frequencies as a
    prediction, cross-entropy on test).
  """
  test_fraction = check_fraction("test_fraction", test_fraction, low_open=True)
  missing = check_fraction("missing", missing)
  # Only this task needs scikit-learn.
  bunch = require("sklearn.datasets", extra="tasks", needed_by="task 'digits'").load_digits()
  xs = (bunch.data / 16.0).reshape(-1, 8, 8).astype(np.float32)  # (1797, 8, 8): row t is step t
  ys = bunch.target.astype(np.int32)  # (1797,)
  train_idx, test_idx = _stratified_split(ys, test_fraction, rng(seed, EXTRA))
  if len(test_idx) == 0 or len(np.unique(ys[train_idx])) < NUM_CLASSES:
    raise ValueError(f"test_fraction must leave every class in train and some images in test; "
                     f"got {test_fraction} ({len(train_idx)} train, {len(test_idx)} test images)")
  train = drop_steps(Split(xs[train_idx], ys[train_idx]), missing, rng(seed, TRAIN))
  test = drop_steps(Split(xs[test_idx], ys[test_idx]), missing, rng(seed, TEST))

  prior = np.bincount(train.ys, minlength=NUM_CLASSES) / train.n  # (10,)
  majority = int(np.argmax(prior))
  return Task(
      name="digits", kind="classify", input_size=8, num_outputs=NUM_CLASSES,
      train=train, test=test,
      baselines={"majority_accuracy": float(np.mean(test.ys == majority)),
                 "prior_xent": float(-np.mean(np.log(prior[test.ys])))},
      info={"test_fraction": test_fraction, "missing": missing, "majority_class": majority,
            "source": "sklearn.datasets.load_digits", "scale": "pixels / 16"})
