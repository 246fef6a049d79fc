"""``text``: a character-level language model on a text file.

The default corpus is the documentation text that ships with Python
(``pydoc_data.topics.topics``), so the task runs offline.
"""

from __future__ import annotations

import math
import os

import numpy as np

from jaxlstm.tasks._base import Split, Task, check_fraction, check_positive_int

LOG2 = math.log(2)

DEFAULT_CORPUS = "pydoc_data.topics.topics"


def default_corpus() -> str:
  """Python's bundled pydoc topics: the dict's values joined in sorted key order."""
  from pydoc_data.topics import topics

  return "".join(topics[key] for key in sorted(topics))


def encode(text: str, vocab: str) -> np.ndarray:
  """Character ids: ``encode(text, vocab)[i] == vocab.index(text[i])``.

  Args:
    text: the string to encode.
    vocab: the vocabulary, one character per id (``task.info["vocab"]``).

  Returns:
    ``(len(text),)`` int32 ids.

  Example:
    >>> encode("abba", "ab")
    array([0, 1, 1, 0], dtype=int32)
  """
  table = {ch: i for i, ch in enumerate(vocab)}
  try:
    return np.fromiter((table[ch] for ch in text), np.int32, count=len(text))
  except KeyError as e:
    raise ValueError(f"text must use only characters of vocab; got {e.args[0]!r}, not in vocab") from None


def decode(ids, vocab: str) -> str:
  """The string of character ids ``ids`` (any int array-like, flattened).

  Example:
    >>> decode([0, 1, 1, 0], "ab")
    'abba'
  """
  ids = np.asarray(ids).reshape(-1)
  if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= len(vocab)):
    raise ValueError(
      f"ids must be integers in [0, {len(vocab)}); got dtype {ids.dtype}, range [{ids.min()}, {ids.max()}]"
    )
  return "".join(vocab[i] for i in ids.tolist())


def _windows(ids: np.ndarray, T: int) -> Split:
  """Non-overlapping windows in text order: ``xs = ids[k T : (k+1) T]``, ``ys`` the same shifted by one."""
  n = (len(ids) - 1) // T
  xs = ids[: n * T].reshape(n, T)  # (N, T)
  ys = ids[1 : n * T + 1].reshape(n, T)  # (N, T): the next character of each input
  return Split(xs, ys)


def _bigram_bits(ids: np.ndarray, V: int) -> float:
  """The conditional entropy of ``ids[t]`` given ``ids[t - 1]`` in ``ids`` itself, in bits per character."""
  pairs = np.bincount(ids[:-1] * V + ids[1:], minlength=V * V).reshape(V, V).astype(np.float64)  # (V, V)
  rows = pairs.sum(1, keepdims=True)  # (V, 1)
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.where(pairs > 0, pairs * np.log2(pairs / rows), 0.0)
  return float(-terms.sum() / pairs.sum())


def text(
  *,
  seed: int = 0,
  path: str | os.PathLike | None = None,
  max_chars: int = 300_000,
  T: int = 100,
  val_fraction: float = 0.05,
  test_fraction: float = 0.1,
) -> Task:
  """Next-character prediction: ``xs (N, T)`` int32 ids, ``ys (N, T)`` the next ids.

  The vocabulary is the sorted set of characters in the text used (the first
  ``max_chars``), train and test together, so the test text has no unknown
  characters. Ids index ``info["vocab"]`` directly; no id is reserved (every
  window is full, so there is no padding). The last ``test_fraction`` of the
  characters is the test text and the ``val_fraction`` before it the
  validation text; each part is cut into non-overlapping windows of ``T``
  steps, and a trailing part shorter than a window is dropped. The windows
  of a split follow each other in the text (window ``k + 1`` starts where
  window ``k`` ends: ``xs[k + 1, 0] == ys[k, -1]``), so a split can be read as
  streams, carrying the state from one window to the next
  (``jaxlstm.fit(..., stateful=True)``, ``jaxlstm.evaluate(..., stateful=True)``).

  Args:
    seed: unused (the split is the text's tail), accepted for a uniform API.
    path: a UTF-8 text file; None uses Python's bundled documentation text.
    max_chars: keep only the first ``max_chars`` characters, to bound memory.
    T: window length.
    val_fraction: fraction of the text held out before the test text, in ``(0, 1)``.
    test_fraction: fraction of the text held out at its end, in ``(0, 1)``.

  Returns:
    An ``"lm"`` :class:`Task` with ``input_size = num_outputs = V`` (the
    vocabulary size), headline metric ``bits_per_char`` and baselines in bits
    per character on the test targets: ``uniform_bits_per_char = log2(V)``,
    ``unigram_bits_per_char`` (the training text's character frequencies,
    add-one smoothed so that characters unseen in training cost a finite
    amount) and ``bigram_bits_per_char``, the bigram entropy of the test text
    itself: the cross-entropy of the best bigram model of that very text, a
    bound that no bigram model trained elsewhere reaches.

  Example:
    >>> task = text()
    >>> b = task.baselines
    >>> b["bigram_bits_per_char"] < b["unigram_bits_per_char"] < b["uniform_bits_per_char"]
    True
  """
  del seed
  max_chars = check_positive_int("max_chars", max_chars)
  T = check_positive_int("T", T)
  val_fraction = check_fraction("val_fraction", val_fraction, low_open=True)
  test_fraction = check_fraction("test_fraction", test_fraction, low_open=True)
  if val_fraction + test_fraction >= 1:
    raise ValueError(f"val_fraction + test_fraction must be below 1; got {val_fraction} + {test_fraction}")
  if path is None:
    corpus, source = default_corpus(), DEFAULT_CORPUS
  else:
    source = os.fspath(path)
    if not os.path.isfile(source):
      raise FileNotFoundError(f"path must name a text file; got {source!r}, which does not exist")
    with open(source, encoding="utf-8") as f:
      corpus = f.read(max_chars)
  corpus = corpus[:max_chars]
  n_test_chars = int(len(corpus) * test_fraction)
  n_val_chars = int(len(corpus) * val_fraction)
  n_train_chars = len(corpus) - n_val_chars - n_test_chars
  # Each part needs T + 1 characters for one window (T inputs, T targets).
  if min(n_train_chars, n_val_chars, n_test_chars) < T + 1:
    raise ValueError(
      f"the text must give at least T + 1 = {T + 1} characters to each of train, validation and "
      f"test; got {n_train_chars}, {n_val_chars} and {n_test_chars} from {len(corpus)} characters "
      f"of {source!r} (max_chars={max_chars}, val_fraction={val_fraction}, "
      f"test_fraction={test_fraction})"
    )

  vocab = "".join(sorted(set(corpus)))
  ids = encode(corpus, vocab)  # (n_chars,)
  train_ids = ids[:n_train_chars]
  val_ids = ids[n_train_chars : n_train_chars + n_val_chars]
  test_ids = ids[n_train_chars + n_val_chars :]
  train, val, test = _windows(train_ids, T), _windows(val_ids, T), _windows(test_ids, T)

  V = len(vocab)
  counts = np.bincount(train_ids, minlength=V) + 1  # add-one smoothing
  log_p = np.log(counts / counts.sum())  # (V,)
  return Task(
    name="text",
    kind="lm",
    input_size=V,
    num_outputs=V,
    train=train,
    val=val,
    test=test,
    metric="bits_per_char",
    units={"loss": "nats per character"},
    baselines={
      "uniform_bits_per_char": math.log2(V),
      "unigram_bits_per_char": float(-np.mean(log_p[test.ys])) / LOG2,
      "bigram_bits_per_char": _bigram_bits(test_ids, V),
    },
    info={
      "vocab": vocab,
      "source": source,
      "n_chars": len(corpus),
      "train_chars": len(train_ids),
      "val_chars": len(val_ids),
      "test_chars": len(test_ids),
      "T": T,
    },
  )
