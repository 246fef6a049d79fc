"""``copy``: the copy-memory task.

Ten symbols must be held in memory for ``T`` steps and reproduced after a
delimiter. A memoryless model can do no better than predicting blanks and
then guessing uniformly over the 8 symbols, which fixes the baseline.

References:
  Arjovsky, Shah & Bengio, "Unitary Evolution Recurrent Neural Networks", 2016
  (section 4.1).
"""

from __future__ import annotations

import math

import numpy as np

from jaxlstm.tasks._base import TEST, TRAIN, VAL, Split, Task, check_positive_int, rng

BLANK, DELIMITER = 0, 9
NUM_SYMBOLS = 8  # symbols 1..8
N_COPY = 10  # how many symbols to remember
INPUT_SIZE = 10  # one-hot over blank, 8 symbols, delimiter
# Targets are blanks or symbols, never the delimiter: classes 0..8.
NUM_OUTPUTS = 9


def _split(seed: int, stream: int, n: int, T: int) -> Split:
  gen = rng(seed, stream)
  length = T + 2 * N_COPY
  symbols = gen.integers(1, NUM_SYMBOLS + 1, size=(n, N_COPY), dtype=np.int32)  # (N, 10)
  # Input:  10 symbols, T-1 blanks, the delimiter, 10 blanks.
  tokens = np.zeros((n, length), np.int32)  # (N, T+20)
  tokens[:, :N_COPY] = symbols
  tokens[:, N_COPY + T - 1] = DELIMITER
  # Target: T+10 blanks, then the 10 symbols.
  ys = np.zeros((n, length), np.int32)  # (N, T+20)
  ys[:, -N_COPY:] = symbols
  xs = np.eye(INPUT_SIZE, dtype=np.float32)[tokens]  # (N, T+20, 10)
  return Split(xs, ys)


def copy_task(*, seed: int = 0, T: int = 100, n_train: int = 10_000, n_val: int = 1_000, n_test: int = 1_000) -> Task:
  """Copy memory: ``xs (N, T+20, 10)`` one-hot, ``ys (N, T+20)`` int32 in ``[0, 9)``.

  Input tokens: 10 symbols from ``{1..8}``, ``T - 1`` blanks (0), the
  delimiter (9), 10 blanks. Targets: blanks everywhere except the last 10
  steps, which repeat the first 10 symbols. The delimiter is an input only,
  so there are 9 output classes.

  Args:
    seed: makes the data deterministic.
    T: the delay between the last symbol and its recall; sequences have
      ``T + 20`` steps.
    n_train: number of training sequences.
    n_val: number of validation sequences.
    n_test: number of test sequences.

  Returns:
    A ``"seq_classify"`` :class:`Task` with ``input_size=10``,
    ``num_outputs=9``, headline metric ``loss`` (cross-entropy in nats per
    step) and baselines (mean over all ``T + 20`` steps) of the memoryless
    strategy, exact: ``memoryless_loss = 10 ln(8) / (T + 20)`` and
    ``memoryless_accuracy = (T + 10 + 10/8) / (T + 20)``.
  """
  T = check_positive_int("T", T)
  n_train = check_positive_int("n_train", n_train)
  n_val = check_positive_int("n_val", n_val)
  n_test = check_positive_int("n_test", n_test)
  length = T + 2 * N_COPY
  return Task(
    name="copy",
    kind="seq_classify",
    input_size=INPUT_SIZE,
    num_outputs=NUM_OUTPUTS,
    train=_split(seed, TRAIN, n_train, T),
    val=_split(seed, VAL, n_val, T),
    test=_split(seed, TEST, n_test, T),
    metric="loss",
    units={"loss": "nats per step"},
    baselines={
      "memoryless_loss": N_COPY * math.log(NUM_SYMBOLS) / length,
      "memoryless_accuracy": (T + N_COPY + N_COPY / NUM_SYMBOLS) / length,
    },
    info={
      "T": T,
      "seq_len": length,
      "blank": BLANK,
      "delimiter": DELIMITER,
      "symbols": list(range(1, NUM_SYMBOLS + 1)),
      "n_copy": N_COPY,
    },
  )
