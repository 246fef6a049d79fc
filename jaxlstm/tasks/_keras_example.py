"""``keras-example``: the random data of the classic Keras LSTM example.

Inputs and labels are independent noise, so no model can beat chance on the
test split; the task checks that the plumbing runs and that a network can
memorise its training set (train accuracy climbs, test accuracy stays ~0.1).
"""

from __future__ import annotations

import math

import numpy as np

from jaxlstm.tasks._base import TEST, TRAIN, VAL, Split, Task, check_positive_int, rng

INPUT_SIZE = 10
NUM_CLASSES = 10


def _split(seed: int, stream: int, n: int, T: int) -> Split:
  gen = rng(seed, stream)
  xs = gen.random((n, T, INPUT_SIZE), dtype=np.float32)  # (N, T, 10) uniform [0, 1)
  # One label per sequence. The original example gave labels of shape
  # (batch, seq_len); a sequence classifier plainly meant one per row.
  ys = gen.integers(0, NUM_CLASSES, size=n, dtype=np.int32)  # (N,)
  return Split(xs, ys)


def keras_example(*, seed: int = 0, n_train: int = 1000, n_val: int = 200, n_test: int = 200, T: int = 100) -> Task:
  """Uniform random inputs ``(N, T, 10)`` with random labels in ``[0, 10)``.

  Args:
    seed: makes the data deterministic.
    n_train: number of training sequences.
    n_val: number of validation sequences.
    n_test: number of test sequences.
    T: sequence length.

  Returns:
    A ``"classify"`` :class:`Task` with ``input_size=10``, ``num_outputs=10``,
    headline metric ``accuracy`` and baselines ``chance_accuracy = 0.1``,
    ``chance_loss = ln(10)`` (nats).
  """
  n_train = check_positive_int("n_train", n_train)
  n_val = check_positive_int("n_val", n_val)
  n_test = check_positive_int("n_test", n_test)
  T = check_positive_int("T", T)
  return Task(
    name="keras-example",
    kind="classify",
    input_size=INPUT_SIZE,
    num_outputs=NUM_CLASSES,
    train=_split(seed, TRAIN, n_train, T),
    val=_split(seed, VAL, n_val, T),
    test=_split(seed, TEST, n_test, T),
    metric="accuracy",
    baselines={"chance_accuracy": 1 / NUM_CLASSES, "chance_loss": math.log(NUM_CLASSES)},
    info={"T": T, "note": "labels are independent of the inputs: test accuracy cannot beat chance"},
  )
