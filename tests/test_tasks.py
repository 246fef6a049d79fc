"""The training tasks: shapes, dtypes, determinism, and baselines checked against oracles.

The baselines are recomputed here from the raw data (statsmodels' series, the
generated sequences) rather than read back from the task.
"""

import ast
import math
import pathlib

import numpy as np
import pytest

from jaxlstm import tasks
from jaxlstm.tasks import Split, Task, decode, encode, make_task

# Small options for every task, so the whole file runs in seconds.
SMALL = {
  "keras-example": dict(n_train=16, n_val=4, n_test=8, T=5),
  "adding": dict(n_train=16, n_val=4, n_test=8, T=10),
  "adding-var": dict(n_train=16, n_val=4, n_test=8, T=10),
  "copy": dict(n_train=16, n_val=4, n_test=8, T=5),
  "digits": dict(missing=0.2),
  "pixel-digits": dict(missing=0.2),
  "sunspots": dict(window=10, gaps=0.1),
  "text": dict(max_chars=5_000, T=20),
}


def test_registry_lists_every_task():
  assert sorted(tasks.TASKS) == sorted(SMALL)


def test_no_jax_in_data_code():
  """The data code is plain NumPy: none of its modules imports jax."""
  pkg = pathlib.Path(tasks.__file__).parent
  for path in pkg.glob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      names = (
        [a.name for a in node.names]
        if isinstance(node, ast.Import)
        else [node.module or ""]
        if isinstance(node, ast.ImportFrom)
        else []
      )
      assert not any(n == "jax" or n.startswith("jax.") for n in names), (path.name, names)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_dtypes_and_determinism(name):
  task = make_task(name, seed=3, **SMALL[name])
  assert isinstance(task, Task) and task.name == name
  again = make_task(name, seed=3, **SMALL[name])
  for split, split2 in [(task.train, again.train), (task.val, again.val), (task.test, again.test)]:
    assert isinstance(split, Split)
    for field in ("xs", "ys", "lengths", "mask"):
      a, b = getattr(split, field), getattr(split2, field)
      assert (a is None) == (b is None)
      if a is not None:
        np.testing.assert_array_equal(a, b)
    n, T = split.xs.shape[:2]
    if task.kind == "lm":
      assert split.xs.dtype == np.int32 and split.xs.shape == (n, T)
      assert split.xs.min() >= 0 and split.xs.max() < task.input_size
    else:
      assert split.xs.dtype == np.float32 and split.xs.shape == (n, T, task.input_size)
    expected_ys = {
      "classify": ((n,), np.int32),
      "regress": ((n, task.num_outputs), np.float32),
      "seq_classify": ((n, T), np.int32),
      "lm": ((n, T), np.int32),
    }[task.kind]
    assert (split.ys.shape, split.ys.dtype) == expected_ys
    if split.ys.dtype == np.int32:
      assert split.ys.min() >= 0 and split.ys.max() < task.num_outputs
    if split.lengths is not None:
      assert split.lengths.dtype == np.int32 and split.lengths.shape == (n,)
    if split.mask is not None:
      assert split.mask.dtype == np.bool_ and split.mask.shape == (n, T)
      # Unobserved steps are zero.
      assert not np.any(split.xs[~split.mask])
  assert all(isinstance(v, float) and math.isfinite(v) for v in task.baselines.values())
  # The headline metric has a unit, and every baseline is named after the metric whose unit it is in.
  assert task.metric in task.units and task.baselines_of(), task.baselines
  for name in task.baselines:
    assert any(name.endswith(f"_{m}") for m in task.units), name


@pytest.mark.parametrize("name", sorted(SMALL))
def test_three_disjoint_splits(name):
  """No validation or test example is a training example, so selecting on validation never sees test data."""
  task = make_task(name, seed=2, **SMALL[name])
  rows = {s: {r.tobytes() for r in getattr(task, s).xs} for s in ("train", "val", "test")}
  assert task.val.n > 0 and task.test.n > 0
  if name in ("sunspots", "text"):  # contiguous periods of one series: windows overlap in inputs, not targets
    return
  assert not rows["val"] & rows["test"] and not rows["train"] & rows["val"] and not rows["train"] & rows["test"]


@pytest.mark.parametrize("name", ["keras-example", "adding", "adding-var", "copy", "digits", "pixel-digits"])
def test_seed_changes_data(name):
  a, b = make_task(name, seed=0, **SMALL[name]), make_task(name, seed=1, **SMALL[name])
  assert not np.array_equal(a.train.xs, b.train.xs)


def test_test_split_does_not_depend_on_n_train_or_n_val():
  a = make_task("adding", n_train=4, n_val=2, n_test=8, T=10)
  b = make_task("adding", n_train=32, n_val=16, n_test=8, T=10)
  np.testing.assert_array_equal(a.test.xs, b.test.xs)


# keras-example -----------------------------------------------------------------


def test_keras_example():
  task = make_task("keras-example")
  assert task.kind == "classify" and (task.input_size, task.num_outputs) == (10, 10)
  assert task.train.xs.shape == (1000, 100, 10) and task.test.xs.shape == (200, 100, 10)
  assert task.val.xs.shape == (200, 100, 10)
  assert task.train.xs.min() >= 0 and task.train.xs.max() < 1
  assert set(np.unique(task.train.ys)) == set(range(10))
  assert task.baselines == {"chance_accuracy": 0.1, "chance_loss": math.log(10)}


# adding -------------------------------------------------------------------------


@pytest.mark.parametrize("T", [2, 3, 10])
def test_adding_markers_and_targets(T):
  task = make_task("adding", T=T, n_train=64, n_test=8)
  xs, ys = task.train.xs, task.train.ys
  assert task.train.lengths is None and task.train.mask is None
  assert np.all((xs[..., 1] == 0) | (xs[..., 1] == 1))
  for x, y in zip(xs, ys):
    marked = np.flatnonzero(x[:, 1])
    assert len(marked) == 2
    assert marked[0] < T // 2 <= marked[1]
    assert y[0] == pytest.approx(x[marked[0], 0] + x[marked[1], 0], abs=1e-6)


def test_adding_trivial_mse():
  task = make_task("adding", T=4, n_train=1, n_test=20_000)
  assert task.baselines["trivial_mse"] == 1 / 6
  # The standard error of the mean of (y - 1)^2 is about 0.2 / sqrt(n) = 0.0014.
  empirical = float(np.mean((task.test.ys.astype(np.float64) - 1) ** 2))
  assert empirical == pytest.approx(1 / 6, abs=0.006)
  assert task.baselines["trivial_test_mse"] == pytest.approx(empirical, rel=1e-12)
  # Predicting the mean beats any other constant: 1 is the mean of the target.
  assert float(np.mean(task.test.ys)) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("T", [2, 5, 30])
def test_adding_variable_length(T):
  task = make_task("adding-var", T=T, n_train=200, n_test=8)
  same = make_task("adding", T=T, n_train=200, n_test=8, variable_length=True)
  np.testing.assert_array_equal(task.train.xs, same.train.xs)
  xs, ys, lengths = task.train.xs, task.train.ys, task.train.lengths
  assert lengths.min() >= max(2, T // 2) and lengths.max() <= T
  if T >= 5:
    assert len(np.unique(lengths)) > 1
  for x, y, L in zip(xs, ys, lengths):
    assert not np.any(x[L:]), "padding must be zero"
    marked = np.flatnonzero(x[:, 1])
    assert len(marked) == 2 and marked[0] < L // 2 <= marked[1] < L
    assert y[0] == pytest.approx(x[marked, 0].sum(), abs=1e-6)


# copy ---------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 5, 100])
def test_copy_layout(T):
  task = make_task("copy", T=T, n_train=8, n_test=8)
  xs, ys = task.train.xs, task.train.ys
  assert xs.shape == (8, T + 20, 10) and ys.shape == (8, T + 20)
  assert np.all(xs.sum(-1) == 1), "inputs are one-hot"
  tokens = xs.argmax(-1)
  assert np.all((tokens[:, :10] >= 1) & (tokens[:, :10] <= 8))
  assert np.all(tokens[:, 10 : T + 9] == 0) and np.all(tokens[:, T + 9] == 9)
  assert np.all(tokens[:, T + 10 :] == 0)
  assert np.all(ys[:, : T + 10] == 0)
  np.testing.assert_array_equal(ys[:, -10:], tokens[:, :10])
  assert task.num_outputs == 9 and ys.max() < 9


def test_copy_memoryless_baseline_is_achieved():
  T = 30
  task = make_task("copy", T=T, n_train=1, n_test=2_000)
  assert task.baselines["memoryless_loss"] == pytest.approx(10 * math.log(8) / (T + 20))
  # The memoryless strategy: blank with probability 1 for T + 10 steps, then
  # uniform over the 8 symbols. Score its cross-entropy on the actual targets.
  probs = np.zeros((T + 20, task.num_outputs))
  probs[: T + 10, 0] = 1
  probs[T + 10 :, 1:9] = 1 / 8
  ys = task.test.ys
  p_true = probs[np.arange(T + 20), ys]  # (N, T+20)
  xent = -np.mean(np.log(p_true))
  assert xent == pytest.approx(task.baselines["memoryless_loss"], rel=1e-12)
  # Its accuracy (guessing symbol 1) is right in expectation.
  guess = probs.argmax(-1)  # blank, then symbol 1
  accuracy = np.mean(guess == ys)
  assert accuracy == pytest.approx(task.baselines["memoryless_accuracy"], abs=0.005)


# digits -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_digits():
  from sklearn.datasets import load_digits

  return load_digits()


def test_digits_split_is_stratified_and_complete(raw_digits):
  task = make_task("digits", seed=2)
  assert (task.train.n, task.val.n, task.test.n) == (1259, 179, 359)
  assert task.kind == "classify" and (task.input_size, task.num_outputs) == (8, 10)
  assert task.train.mask is None and task.test.mask is None
  counts = np.bincount(raw_digits.target)
  np.testing.assert_array_equal(np.bincount(task.test.ys), np.round(counts * 0.2).astype(int))
  np.testing.assert_array_equal(np.bincount(task.val.ys), np.round(counts * 0.1).astype(int))
  # Every image is in exactly one split, row t of the image as step t.
  both = np.concatenate([task.train.xs, task.val.xs, task.test.xs]).reshape(-1, 64) * 16
  labels = np.concatenate([task.train.ys, task.val.ys, task.test.ys])
  got = np.column_stack([both, labels])
  want = np.column_stack([raw_digits.images.reshape(-1, 64), raw_digits.target])
  np.testing.assert_array_equal(got[np.lexsort(got.T)], want[np.lexsort(want.T)])
  # The majority baseline, recomputed.
  majority = np.bincount(task.train.ys).argmax()
  assert task.baselines["majority_accuracy"] == pytest.approx(np.mean(task.test.ys == majority))
  assert task.baselines["majority_accuracy"] < 0.15


def test_pixel_digits_reads_the_same_images_pixel_by_pixel():
  rows, pixels = make_task("digits", seed=1), make_task("pixel-digits", seed=1)
  assert pixels.input_size == 1 and pixels.train.xs.shape == (rows.train.n, 64, 1)
  for a, b in [(rows.train, pixels.train), (rows.val, pixels.val), (rows.test, pixels.test)]:
    np.testing.assert_array_equal(a.xs.reshape(-1, 64), b.xs[..., 0])  # row-major: pixel 8 r + c is step 8 r + c
    np.testing.assert_array_equal(a.ys, b.ys)
  assert rows.baselines == pixels.baselines


def test_digits_missing_rows():
  task = make_task("digits", missing=0.3, seed=1)
  clean = make_task("digits", seed=1)
  for split, full in [(task.train, clean.train), (task.test, clean.test)]:
    assert split.mask.shape == (split.n, 8)
    assert np.mean(split.mask) == pytest.approx(0.7, abs=0.03)
    np.testing.assert_array_equal(split.xs[~split.mask], 0)
    np.testing.assert_array_equal(split.xs[split.mask], full.xs[split.mask])
    np.testing.assert_array_equal(split.ys, full.ys)


# sunspots -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_sunspots():
  from statsmodels.datasets import sunspots

  data = sunspots.load_pandas().data
  return data["YEAR"].to_numpy(), data["SUNACTIVITY"].to_numpy()


def test_sunspots_windows_and_years(raw_sunspots):
  years, values = raw_sunspots
  task = make_task("sunspots", window=20)
  info = task.info
  assert info["test_years"] == (1949, 2008) and info["val_years"] == (1909, 1948)
  assert info["train_years"] == (1720, 1908)
  assert (task.train.n, task.val.n, task.test.n) == (189, 40, 60)
  assert task.train.xs.shape == (189, 20, 1) and task.test.ys.shape == (60, 1)
  # Normalized with the training years only.
  assert info["y_mean"] == pytest.approx(values[years <= 1908].mean())
  assert info["y_std"] == pytest.approx(values[years <= 1908].std())
  denorm = lambda a: a.astype(np.float64) * info["y_std"] + info["y_mean"]
  test_values = values[years >= 1949]
  np.testing.assert_allclose(denorm(task.test.ys[:, 0]), test_values, atol=1e-3)
  # The first test window is the 20 years 1929-1948.
  np.testing.assert_allclose(denorm(task.test.xs[0, :, 0]), values[(years >= 1929) & (years <= 1948)], atol=1e-3)
  denorm_val = denorm(task.val.ys[:, 0])
  np.testing.assert_allclose(denorm_val, values[(years >= 1909) & (years <= 1948)], atol=1e-3)
  # Train normalization: mean 0, std 1 over the training years.
  assert abs(float(task.train.ys.mean())) < 0.1


def test_sunspots_baselines_recomputed(raw_sunspots):
  years, values = raw_sunspots
  task = make_task("sunspots", window=20, ar_order=9)
  test = years >= 1949
  truth = values[test]
  previous = values[np.flatnonzero(test) - 1]
  persistence = np.sqrt(np.mean((truth - previous) ** 2))
  assert task.baselines["persistence_rmse"] == pytest.approx(persistence, rel=1e-9)
  # Oracle: statsmodels' own AR fit on the years before the test period.
  from statsmodels.tsa.ar_model import AutoReg

  params = AutoReg(values[~test], lags=9, trend="c").fit().params  # [const, lag 1..9]
  np.testing.assert_allclose(task.info["ar_coef"], params, rtol=1e-6)
  idx = np.flatnonzero(test)
  pred = params[0] + sum(params[k] * values[idx - k] for k in range(1, 10))
  ar = np.sqrt(np.mean((truth - pred) ** 2))
  assert task.baselines["ar_rmse"] == pytest.approx(ar, rel=1e-6)
  assert task.baselines["ar_rmse"] < task.baselines["persistence_rmse"]
  assert task.baselines["mean_rmse"] == pytest.approx(
    np.sqrt(np.mean((truth - values[years <= 1908].mean()) ** 2)), rel=1e-9
  )


def test_sunspots_gaps_hide_whole_years():
  task = make_task("sunspots", window=10, gaps=0.2, seed=4)
  clean = make_task("sunspots", window=10)
  mask = task.train.mask
  assert np.mean(mask) == pytest.approx(0.8, abs=0.08)
  np.testing.assert_array_equal(task.train.xs[~mask], 0)
  np.testing.assert_array_equal(task.train.xs[mask], clean.train.xs[mask])
  np.testing.assert_array_equal(task.train.ys, clean.train.ys)
  # Consecutive windows overlap by 9 years, and a missing year is missing in both.
  np.testing.assert_array_equal(mask[1:, :-1], mask[:-1, 1:])
  assert task.baselines == clean.baselines


# text ---------------------------------------------------------------------------


def test_text_default_corpus_windows():
  task = make_task("text", max_chars=20_000, T=50)
  vocab = task.info["vocab"]
  assert task.input_size == task.num_outputs == len(vocab)
  assert task.info["source"] == "pydoc_data.topics.topics"
  from pydoc_data.topics import topics

  corpus = "".join(topics[k] for k in sorted(topics))[:20_000]
  # 85 % train, 5 % validation, 10 % test, in the text's order.
  assert task.train.n == (17_000 - 1) // 50 and task.val.n == (1_000 - 1) // 50
  assert task.test.n == (2_000 - 1) // 50
  # Windows do not overlap, and the targets are the inputs shifted by one.
  assert decode(task.train.xs, vocab) == corpus[: task.train.n * 50]
  assert decode(task.train.ys, vocab) == corpus[1 : task.train.n * 50 + 1]
  assert decode(task.val.xs[0], vocab) == corpus[17_000:17_050]
  assert decode(task.test.xs[0], vocab) == corpus[18_000:18_050]
  assert task.baselines["uniform_bits_per_char"] == math.log2(len(vocab))
  # Unigram oracle: add-one smoothed training frequencies, scored on test targets, in bits.
  train_text = corpus[:17_000]
  test_targets = decode(task.test.ys, vocab)
  logp = {c: math.log2((train_text.count(c) + 1) / (len(train_text) + len(vocab))) for c in vocab}
  unigram = -sum(logp[c] for c in test_targets) / len(test_targets)
  assert task.baselines["unigram_bits_per_char"] == pytest.approx(unigram, rel=1e-9)
  # Bigram oracle: the conditional entropy of each test character given the one before, within the test text.
  test_text = corpus[18_000:]
  pairs, firsts = {}, {}
  for a, b in zip(test_text, test_text[1:]):
    pairs[a, b] = pairs.get((a, b), 0) + 1
    firsts[a] = firsts.get(a, 0) + 1
  bigram = -sum(n * math.log2(n / firsts[a]) for (a, _), n in pairs.items()) / (len(test_text) - 1)
  assert task.baselines["bigram_bits_per_char"] == pytest.approx(bigram, rel=1e-9)
  assert task.baselines["bigram_bits_per_char"] < task.baselines["unigram_bits_per_char"] < math.log2(len(vocab))


def test_text_from_file(tmp_path):
  path = tmp_path / "corpus.txt"
  path.write_text("hello world, héllo jax! " * 40, encoding="utf-8")
  task = make_task("text", path=path, T=10, test_fraction=0.25)
  assert task.info["vocab"] == "".join(sorted(set("hello world, héllo jax! ")))
  assert task.info["source"] == str(path)
  assert decode(task.train.xs[0], task.info["vocab"]) == "hello worl"


def test_encode_decode_round_trip():
  vocab = "".join(sorted(set("the quick brown fox\n")))
  ids = encode("the fox\n", vocab)
  assert ids.dtype == np.int32 and ids.shape == (8,)
  assert decode(ids, vocab) == "the fox\n"
  assert decode(ids[None, :], vocab) == "the fox\n"
  with pytest.raises(ValueError, match=r"text must use only characters of vocab; got 'Z'"):
    encode("Zebra", vocab)
  message = rf"ids must be integers in \[0, {len(vocab)}\); got dtype .*, range \[0, 99\]"
  with pytest.raises(ValueError, match=message):
    decode([0, 99], vocab)
  with pytest.raises(ValueError, match=r"ids must be integers"):
    decode([0.0, 1.0], vocab)


# errors -------------------------------------------------------------------------


def test_errors():
  with pytest.raises(ValueError, match=r"unknown task 'addng'; choose from \['adding', 'adding-var', "):
    make_task("addng")
  with pytest.raises(TypeError, match=r"task 'adding' has no option 'length'; its options are \["):
    make_task("adding", length=5)
  with pytest.raises(ValueError, match=r"seed must be a non-negative int; got -1"):
    make_task("adding", seed=-1)
  with pytest.raises(ValueError, match=r"T must be a positive int; got 0"):
    make_task("copy", T=0)
  with pytest.raises(ValueError, match=r"T must be an int >= 2; got 1"):
    make_task("adding", T=1)
  with pytest.raises(ValueError, match=r"n_train must be a positive int; got 2.5"):
    make_task("keras-example", n_train=2.5)
  with pytest.raises(TypeError, match=r"variable_length must be a bool; got 'yes'"):
    make_task("adding", variable_length="yes")
  with pytest.raises(ValueError, match=r"missing must be a fraction in \[0, 1\); got 1.0"):
    make_task("digits", missing=1.0)
  with pytest.raises(ValueError, match=r"test_fraction must be a fraction in \(0, 1\); got 0"):
    make_task("digits", test_fraction=0)
  with pytest.raises(ValueError, match=r"gaps must be a fraction in \[0, 1\); got -0.1"):
    make_task("sunspots", gaps=-0.1)
  with pytest.raises(ValueError, match=r"ar_order must be at most window=5; got 9"):
    make_task("sunspots", window=5)
  with pytest.raises(ValueError, match=r"window \+ val_years \+ test_years must leave at least ar_order \+ 1 = 10"):
    make_task("sunspots", test_years=290)
  with pytest.raises(FileNotFoundError, match=r"path must name a text file; got '/no/such/file.txt'"):
    make_task("text", path="/no/such/file.txt")
  with pytest.raises(ValueError, match=r"at least T \+ 1 = 101 characters to each of train, validation and test"):
    make_task("text", max_chars=500)


def test_docstring_examples():
  import doctest
  import importlib

  for module in ["jaxlstm.tasks", "jaxlstm.tasks._text"]:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0, module


def test_options_lists_defaults():
  assert tasks.options("adding") == {
    "T": 100,
    "n_train": 10_000,
    "n_val": 1_000,
    "n_test": 1_000,
    "variable_length": False,
  }
  assert tasks.options("sunspots")["window"] == 20
