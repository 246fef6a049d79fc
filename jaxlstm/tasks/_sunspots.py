"""``sunspots``: one-year-ahead forecasts of the yearly sunspot number.

The series (``SUNACTIVITY``, years 1700-2008) ships with statsmodels, so no
download is needed. Windows of the previous ``window`` years predict the next
year. The last ``test_years`` years are the test targets and the
``val_years`` before them the validation targets.
"""

from __future__ import annotations

import numpy as np

from jaxlstm._src.extras import require
from jaxlstm.tasks._base import EXTRA, Split, Task, check_fraction, check_positive_int

UNITS = "yearly mean sunspot number (statsmodels SUNACTIVITY)"


def load_series() -> tuple[np.ndarray, np.ndarray]:
  """The raw series: ``(years, values)``, both ``(309,)`` float64, years 1700-2008."""
  # Only this task needs statsmodels.
  data = require("statsmodels.datasets.sunspots", extra="tasks", needed_by="task 'sunspots'").load_pandas().data
  return data["YEAR"].to_numpy(np.float64), data["SUNACTIVITY"].to_numpy(np.float64)


def _ar_design(values: np.ndarray, targets: np.ndarray, order: int) -> np.ndarray:
  """Rows ``[1, v[t-1], ..., v[t-order]]`` for each target index ``t``: ``(len(targets), order + 1)``."""
  lags = [values[targets - k] for k in range(1, order + 1)]
  return np.stack([np.ones(len(targets))] + lags, axis=1)


def _rmse(pred: np.ndarray, truth: np.ndarray) -> float:
  return float(np.sqrt(np.mean((pred - truth) ** 2)))


def sunspots(
  *, seed: int = 0, window: int = 20, val_years: int = 40, test_years: int = 60, ar_order: int = 9, gaps: float = 0.0
) -> Task:
  """Forecast year ``t`` from years ``t - window`` to ``t - 1``: ``xs (N, window, 1)``, ``ys (N, 1)``.

  Inputs and targets are normalized with the mean and standard deviation of
  the training years (``info["y_mean"]``, ``info["y_std"]``): ``value =
  normalized * y_std + y_mean`` gives the original units, and an RMSE in
  normalized units times ``y_std`` (also ``info["target_scale"]``) gives it in the original units.

  Test targets are the last ``test_years`` years (1949-2008 at the
  defaults), validation targets the ``val_years`` before them (1909-1948),
  and train targets the years from ``1700 + window`` up to the validation
  period (1720-1908). Windows reach back into earlier years, as a real
  forecast would.

  Args:
    seed: picks the missing years when ``gaps > 0`` (the data is otherwise
      fixed).
    window: number of past years each forecast sees, ``W``.
    val_years: number of validation target years before the test period.
    test_years: number of held-out target years at the end of the series.
    ar_order: order ``p`` of the autoregressive baseline, ``1 <= p <= window``
      (so that it sees no more of the past than the network does).
    gaps: probability, in ``[0, 1)``, that each year of the series is missing
      as an input: every window holding it gets ``mask`` False and a zero
      (the training mean) there. Targets are always the recorded values, and
      the baselines use the complete series.

  Returns:
    A ``"regress"`` :class:`Task` with ``input_size=1``, ``num_outputs=1``,
    headline metric ``rmse`` (in sunspot numbers) and baselines on the test
    years, in sunspot numbers: ``persistence_rmse`` (predict last year's
    value), ``ar_rmse`` (a linear AR(p) with intercept, fit by least squares
    to the training and validation years, the same years the network learns
    from and selects on, as statsmodels' ``AutoReg(trend="c")`` fits it;
    coefficients ``[intercept, lag 1, ..., lag p]`` in ``info["ar_coef"]``)
    and ``mean_rmse`` (predict the training mean). The target years of each
    split are in ``info["train_years"]``, ``info["val_years"]`` and
    ``info["test_years"]`` (first and last, inclusive).

  Example:
    >>> task = sunspots()
    >>> task.info["train_years"], task.info["val_years"], task.info["test_years"]
    ((1720, 1908), (1909, 1948), (1949, 2008))
  """
  window = check_positive_int("window", window)
  val_years = check_positive_int("val_years", val_years)
  test_years = check_positive_int("test_years", test_years)
  ar_order = check_positive_int("ar_order", ar_order)
  if ar_order > window:
    raise ValueError(f"ar_order must be at most window={window}; got {ar_order}")
  gaps = check_fraction("gaps", gaps)
  years, values = load_series()
  n = len(values)
  test_start = n - test_years  # index of the first test target
  val_start = test_start - val_years  # index of the first validation target
  # At least ar_order + 1 training targets, so that the AR least-squares fit
  # is determined (ar_order <= window, so the network has as many).
  if val_start - window < ar_order + 1:
    raise ValueError(
      f"window + val_years + test_years must leave at least ar_order + 1 = {ar_order + 1} "
      f"training targets among the {n} years {int(years[0])}-{int(years[-1])}; got "
      f"window={window}, val_years={val_years}, test_years={test_years}"
    )

  # Statistics of the training years only, so that nothing of the held-out years leaks into the inputs.
  mean, std = values[:val_start].mean(), values[:val_start].std()
  normed = (values - mean) / std  # (n,)
  observed = np.ones(n, bool)
  if gaps > 0:
    observed = np.random.default_rng([seed, EXTRA]).random(n) >= gaps

  def split(targets: np.ndarray) -> Split:
    idx = targets[:, None] - window + np.arange(window)  # (N, W): the years before each target
    mask = observed[idx]  # (N, W)
    xs = np.where(mask, normed[idx], 0.0)[..., None].astype(np.float32)  # (N, W, 1)
    ys = normed[targets][:, None].astype(np.float32)  # (N, 1)
    return Split(xs, ys, mask=mask if gaps > 0 else None)

  train_t = np.arange(window, val_start)
  val_t = np.arange(val_start, test_start)
  test_t = np.arange(test_start, n)
  ar_t = np.arange(ar_order, test_start)  # every year before the test period with p years before it
  coef, *_ = np.linalg.lstsq(_ar_design(values, ar_t, ar_order), values[ar_t], rcond=None)
  truth = values[test_t]
  return Task(
    name="sunspots",
    kind="regress",
    input_size=1,
    num_outputs=1,
    train=split(train_t),
    val=split(val_t),
    test=split(test_t),
    metric="rmse",
    units={"mse": "squared standard deviations", "loss": "squared standard deviations", "rmse": "sunspot number"},
    baselines={
      "persistence_rmse": _rmse(values[test_t - 1], truth),
      "ar_rmse": _rmse(_ar_design(values, test_t, ar_order) @ coef, truth),
      "mean_rmse": _rmse(mean, truth),
    },
    info={
      "y_mean": float(mean),
      "y_std": float(std),
      "units": UNITS,
      "target_scale": float(std),
      "train_years": (int(years[train_t[0]]), int(years[train_t[-1]])),
      "val_years": (int(years[val_t[0]]), int(years[val_t[-1]])),
      "test_years": (int(years[test_t[0]]), int(years[test_t[-1]])),
      "normalized_with_years": (int(years[0]), int(years[val_start - 1])),
      "train_target_years": years[train_t].astype(np.int32),
      "test_target_years": years[test_t].astype(np.int32),
      "window": window,
      "ar_order": ar_order,
      "ar_coef": coef,
      "gaps": gaps,
      "observed_years": observed,
    },
  )
