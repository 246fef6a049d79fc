"""``adding`` and ``adding-var``: the adding problem.

Each step carries a value and a marker; the target is the sum of the two
marked values. Solving it needs memory across the whole sequence, while
always predicting 1 (the mean of the target) already gives MSE 1/6: a model
only learns something once it beats that.

References:
  Hochreiter & Schmidhuber, "Long Short-Term Memory", 1997 (experiment 4).
  Le, Jaitly & Hinton, "A Simple Way to Initialize Recurrent Networks of
  Rectified Linear Units", 2015 (the version used here).
  Arjovsky, Shah & Bengio, "Unitary Evolution Recurrent Neural Networks", 2016.
"""

from __future__ import annotations

import numpy as np

from jaxlstm.tasks._base import TEST, TRAIN, VAL, Split, Task, check_positive_int, rng

# Var(U + V) for independent U, V ~ U[0, 1] is 2/12: the MSE of predicting the
# target's mean, 1, every time.
TRIVIAL_MSE = 1 / 6


def _split(seed: int, stream: int, n: int, T: int, variable_length: bool) -> Split:
  gen = rng(seed, stream)
  rows = np.arange(n)
  if variable_length:
    # At least 2 steps, so that each half of the valid prefix holds a marker.
    lengths = gen.integers(max(2, T // 2), T + 1, size=n).astype(np.int32)  # (N,)
  else:
    lengths = np.full(n, T, np.int32)
  half = lengths // 2
  # gen.random() * k floors to a uniform int in [0, k) row by row, each row
  # with its own k.
  first = (gen.random(n) * half).astype(np.int64)  # in [0, L//2)
  second = half + (gen.random(n) * (lengths - half)).astype(np.int64)  # in [L//2, L)
  values = gen.random((n, T), dtype=np.float32)  # (N, T)
  markers = np.zeros((n, T), np.float32)
  markers[rows, first] = 1
  markers[rows, second] = 1
  valid = np.arange(T) < lengths[:, None]  # (N, T)
  xs = np.stack([values * valid, markers], axis=-1).astype(np.float32)  # (N, T, 2)
  ys = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)  # (N, 1)
  return Split(xs, ys, lengths=lengths if variable_length else None)


def adding(
  *,
  seed: int = 0,
  T: int = 100,
  n_train: int = 10_000,
  n_val: int = 1_000,
  n_test: int = 1_000,
  variable_length: bool = False,
) -> Task:
  """The adding problem: ``xs (N, T, 2)``, ``ys (N, 1)`` = sum of two marked values.

  Channel 0 is uniform in ``[0, 1)``; channel 1 is zero except for two 1s, one
  in the first half of the sequence and one in the second half.

  Args:
    seed: makes the data deterministic.
    T: sequence length (the longest one if ``variable_length``); at least 2.
    n_train: number of training sequences.
    n_val: number of validation sequences.
    n_test: number of test sequences.
    variable_length: if True, row ``n`` has a length ``L`` uniform in
      ``[max(2, T // 2), T]``, its markers in the first and second halves of
      its valid prefix (``[0, L//2)`` and ``[L//2, L)``), zeros after it, and
      ``lengths`` set on every split.

  Returns:
    A ``"regress"`` :class:`Task` with ``input_size=2``, ``num_outputs=1``,
    headline metric ``mse``, and baselines ``trivial_mse = 1/6`` (exact) and
    ``trivial_test_mse`` (predicting 1 on this test split). Targets are not
    normalized, so ``info`` has no ``y_mean`` / ``y_std``.
  """
  T = check_positive_int("T", T, minimum=2)
  n_train = check_positive_int("n_train", n_train)
  n_val = check_positive_int("n_val", n_val)
  n_test = check_positive_int("n_test", n_test)
  if not isinstance(variable_length, (bool, np.bool_)):
    raise TypeError(f"variable_length must be a bool; got {variable_length!r}")
  train = _split(seed, TRAIN, n_train, T, bool(variable_length))
  val = _split(seed, VAL, n_val, T, bool(variable_length))
  test = _split(seed, TEST, n_test, T, bool(variable_length))
  return Task(
    name="adding-var" if variable_length else "adding",
    kind="regress",
    input_size=2,
    num_outputs=1,
    train=train,
    val=val,
    test=test,
    metric="mse",
    baselines={"trivial_mse": TRIVIAL_MSE, "trivial_test_mse": float(np.mean((test.ys.astype(np.float64) - 1) ** 2))},
    info={"T": T, "variable_length": bool(variable_length)},
  )


def adding_var(*, seed: int = 0, T: int = 100, n_train: int = 10_000, n_val: int = 1_000, n_test: int = 1_000) -> Task:
  """:func:`adding` with ``variable_length=True``: the task that exercises ``lengths``."""
  return adding(seed=seed, T=T, n_train=n_train, n_val=n_val, n_test=n_test, variable_length=True)
