"""Training: one jitted optax step, evaluation, and a Keras-like ``fit`` loop.

Data is a dict (or any pytree) of NumPy arrays that share their leading axis
``N``. The order of batches is a pure function of ``(seed, step)``, and the
train state carries the step, the optimizer state and the PRNG key (and, for
a stateful run, every stream's recurrent state), so a run resumed from a
checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlstm import distributed

if TYPE_CHECKING:
  from jaxlstm.checkpoint import Checkpointer  # imported where it is used: orbax loads only when checkpointing

# loss_fn(params, batch, key) -> loss, or (loss, {metric: value}).
LossFn = Callable[[Any, Any, jax.Array], Any]
# With stateful=True: loss_fn(params, batch, key, carry) -> (loss or (loss, metrics), new_carry), carry=None
# meaning "start every row from the model's initial state".
StatefulLossFn = Callable[[Any, Any, jax.Array, Any], Any]


class TrainState(NamedTuple):
  """Everything a run needs to continue: checkpoint this and nothing else.

  Attributes:
    step: ``()`` int32, the number of updates done.
    params: the model's params, any pytree.
    opt_state: the optimizer's state for ``params``.
    key: ``(2,)`` uint32 raw PRNG key data, split once per step.
    carry: a stateful run's recurrent state, every row's final state of the last step (see :func:`fit`'s
      ``stateful``); ``None`` otherwise. It is checkpointed with the rest, so a resumed run carries on.

  Example:
    >>> import optax
    >>> state = jaxlstm.init_train_state(jaxlstm.gru_init(jax.random.key(0), 3, 5), optax.sgd(0.1))
    >>> int(state.step), state.key.shape, state.key.dtype
    (0, (2,), dtype('uint32'))
  """

  step: jax.Array  # () int32, number of updates done
  params: Any
  opt_state: Any
  key: jax.Array  # (2,) uint32 raw PRNG key data, split once per step
  carry: Any = None  # stateful runs: the last step's final states, leaves (batch_size, F)


def init_train_state(params: Any, optimizer: optax.GradientTransformation, seed: int = 0) -> TrainState:
  """A fresh :class:`TrainState` at step 0.

  Args:
    params: the initial params, any pytree.
    optimizer: the optax optimizer whose state it holds.
    seed: seeds the key that :func:`make_train_step` splits once per step.

  Returns:
    :class:`TrainState` with ``step == 0`` and ``optimizer.init(params)``.

  Example:
    >>> import optax
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> state = jaxlstm.init_train_state(params, optax.adam(1e-3), seed=1)
    >>> int(state.step), state.params is params
    (0, True)
  """
  key = jax.random.key_data(jax.random.PRNGKey(seed)).astype(jnp.uint32)
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), key)


def _split(out: Any) -> tuple[Any, dict]:
  loss, metrics = out if isinstance(out, tuple) else (out, {})
  return loss, dict(metrics)


def _with_metrics(loss_fn: Callable[..., Any]) -> Callable:  # a LossFn, as check_loss_fn has found
  def wrapped(params, batch, key):
    return _split(loss_fn(params, batch, key))

  return wrapped


def _stateful_with_metrics(loss_fn: Callable[..., Any]) -> Callable:  # a StatefulLossFn, as check_loss_fn has found
  """``(params, batch, key, carry) -> (loss, (metrics, new_carry))``, for ``value_and_grad(has_aux=True)``."""

  def wrapped(params, batch, key, carry):
    out, new_carry = loss_fn(params, batch, key, carry)
    loss, metrics = _split(out)
    return loss, (metrics, new_carry)

  return wrapped


def _takes_carry(fn: Callable) -> bool | None:
  """Whether ``fn`` can take a fourth positional argument (``carry``); ``None`` where Python cannot tell."""
  try:
    sig = inspect.signature(fn)
  except (TypeError, ValueError):
    return None
  try:
    sig.bind(None, None, None, None)
    return True
  except TypeError:
    return False


def check_loss_fn(name: str, fn: Callable, *, stateful: bool) -> None:
  """Refuses a loss function whose signature does not fit ``stateful``, naming ``name`` and both contracts.

  Example:
    >>> from jaxlstm.train import check_loss_fn
    >>> check_loss_fn("loss_fn", lambda params, batch, key, carry: None, stateful=True)
    >>> check_loss_fn("loss_fn", lambda params, batch, key: None, stateful=True)
    Traceback (most recent call last):
    ValueError: stateful=True needs loss_fn(params, batch, key, carry) -> ...; got a loss_fn that does not take carry
  """
  takes = _takes_carry(fn)
  if stateful and takes is False:
    raise ValueError(
      f"stateful=True needs {name}(params, batch, key, carry) -> (loss or (loss, metrics), "
      f"new_carry); got a {name} that does not take carry"
    )
  if not stateful and takes is True:
    try:
      inspect.signature(fn).bind(None, None, None)
    except TypeError:
      raise ValueError(
        f"{name} takes carry, a stateful loss; pass stateful=True, or give "
        f"{name}(params, batch, key) -> loss or (loss, metrics)"
      ) from None


def make_train_step(
  loss_fn: LossFn | StatefulLossFn,
  optimizer: optax.GradientTransformation,
  *,
  jit: bool = True,
  mesh: jax.sharding.Mesh | None = None,
  stateful: bool = False,
) -> Callable[..., tuple[TrainState, dict]]:
  """Builds ``train_step(state, batch) -> (state, metrics)``.

  One call computes ``jax.value_and_grad`` of ``loss_fn``, applies the optax
  update, and advances the step and the key.

  With ``stateful``, ``loss_fn(params, batch, key, carry)`` returns ``(loss
  or (loss, metrics), new_carry)``, and the step is ``train_step(state,
  batch, fresh=False)``: it passes ``state.carry`` (``None`` when ``fresh``)
  and keeps ``new_carry`` in the new state. The carry enters as data, so the
  gradient stops at the batch boundary: truncated backpropagation through
  time.

  Args:
    loss_fn: ``loss_fn(params, batch, key)`` returning a scalar loss, or
      ``(loss, metrics)`` with a dict of scalar metrics. ``key`` is a fresh PRNG
      key each step, for dropout.
    optimizer: an optax ``GradientTransformation``.
    jit: compile the step with ``jax.jit``.
    mesh: a ``jax.sharding.Mesh`` with a ``batch`` axis (see
      :mod:`jaxlstm.distributed`): the batch arrives split along its first
      axis, the state stays replicated, and the compiler all-reduces the
      gradients.
    stateful: carry each row's final state into the next step (see above).

  Returns:
    ``train_step(state: TrainState, batch) -> (TrainState, metrics)``; the
    metrics include ``"loss"`` and ``"grad_norm"``.

  Raises:
    ValueError: a ``loss_fn`` whose signature does not fit ``stateful``.

  Example:
    >>> import optax
    >>> def loss_fn(params, batch, key):
    ...   _, hs = jaxlstm.lstm(params, batch["xs"])
    ...   loss = jnp.mean((hs[:, -1, 0] - batch["ys"]) ** 2)
    ...   return loss, {"rmse": jnp.sqrt(loss)}
    >>> optimizer = optax.adam(1e-2)
    >>> train_step = jaxlstm.make_train_step(loss_fn, optimizer)
    >>> state = jaxlstm.init_train_state(jaxlstm.lstm_init(jax.random.key(0), 3, 5), optimizer)
    >>> state, metrics = train_step(state, {"xs": jnp.ones((4, 6, 3)), "ys": jnp.zeros((4,))})
    >>> int(state.step), sorted(metrics)
    (1, ['grad_norm', 'loss', 'rmse'])
  """
  check_loss_fn("loss_fn", loss_fn, stateful=stateful)
  if stateful and mesh is not None:
    raise ValueError("stateful=True runs on one device; got a mesh (leave devices=None)")
  grad_fn = jax.value_and_grad(_stateful_with_metrics(loss_fn) if stateful else _with_metrics(loss_fn), has_aux=True)

  def update(state: TrainState, loss, metrics, grads, key, carry):
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
    return TrainState(state.step + 1, params, opt_state, jax.random.key_data(key), carry), metrics

  def train_step(state: TrainState, batch: Any):
    key, sub = jax.random.split(jax.random.wrap_key_data(state.key))
    (loss, metrics), grads = grad_fn(state.params, batch, sub)
    return update(state, loss, metrics, grads, key, state.carry)

  def stateful_step(state: TrainState, batch: Any, fresh: bool = False):
    key, sub = jax.random.split(jax.random.wrap_key_data(state.key))
    (loss, (metrics, carry)), grads = grad_fn(state.params, batch, sub, None if fresh else state.carry)
    # value_and_grad does not differentiate the aux output; stop_gradient says so for any other transform.
    return update(state, loss, metrics, grads, key, jax.lax.stop_gradient(carry))

  if stateful:
    return jax.jit(stateful_step, static_argnames="fresh") if jit else stateful_step
  if not jit:
    return train_step
  if mesh is None:
    return jax.jit(train_step)
  rep, rows = distributed.replicated(mesh), distributed.batch_sharding(mesh)
  return jax.jit(train_step, in_shardings=(rep, rows), out_shardings=(rep, rep))


def num_examples(data: Any) -> int:
  """The leading size ``N`` that every array of ``data`` shares.

  Raises:
    ValueError: ``data`` holds no arrays, or two of them differ in their leading size.

  Example:
    >>> from jaxlstm.train import num_examples
    >>> num_examples({"xs": np.zeros((10, 6, 3)), "ys": np.zeros((10,))})
    10
    >>> num_examples({"xs": np.zeros((10, 6, 3)), "ys": np.zeros((9,))})
    Traceback (most recent call last):
    ValueError: every array in data must have the same leading size; got 10 and 9
  """
  leaves = jax.tree_util.tree_leaves(data)
  if not leaves:
    raise ValueError("data must hold at least one array")
  n = np.shape(leaves[0])[0]
  for leaf in leaves:
    if np.shape(leaf)[0] != n:
      raise ValueError(f"every array in data must have the same leading size; got {n} and {np.shape(leaf)[0]}")
  return n


def take(data: Any, idx: np.ndarray) -> Any:
  """The examples ``idx`` of every array in ``data``, as NumPy arrays.

  Example:
    >>> from jaxlstm.train import take
    >>> take({"xs": np.arange(10) * 10}, np.array([3, 1]))
    {'xs': array([30, 10])}
  """
  return jax.tree_util.tree_map(lambda a: np.asarray(a)[idx], data)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
  """The examples of training step ``step``: a fresh permutation per epoch, from ``(seed, epoch)`` alone.

  Each epoch uses ``n // batch_size`` full batches; the remainder is dropped
  so every step has the same shape and compiles once.

  Example:
    >>> from jaxlstm.train import batch_indices
    >>> epoch0 = np.concatenate([batch_indices(10, 4, step, seed=0) for step in (0, 1)])
    >>> len(set(epoch0))  # two batches of 4 distinct examples; 2 of the 10 wait for another epoch
    8
    >>> bool((batch_indices(10, 4, 1, seed=0) == epoch0[4:]).all())  # the same (seed, step), the same batch
    True
  """
  per_epoch = n // batch_size
  epoch, i = divmod(step, per_epoch)
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  return perm[i * batch_size : (i + 1) * batch_size]


def stream_indices(n: int, batch_size: int, step: int) -> np.ndarray:
  """The windows of stateful training step ``step``: row ``j`` reads stream ``j``, the next window of it.

  The ``n`` windows, in order, are cut into ``batch_size`` streams of ``K = n //
  batch_size`` consecutive windows: stream ``j`` holds windows ``j K`` to ``j K
  + K - 1``, and step ``s`` takes window ``j K + (s mod K)`` for row ``j``. So
  row ``j`` of step ``s`` is the window that follows row ``j`` of step ``s -
  1``, except at an epoch start (``s mod K == 0``), where every stream starts
  again. The last ``n mod batch_size`` windows are not read.

  Example:
    >>> from jaxlstm.train import stream_indices
    >>> [stream_indices(10, 3, step).tolist() for step in range(4)]  # K = 3; window 9 is not read
    [[0, 3, 6], [1, 4, 7], [2, 5, 8], [0, 3, 6]]
  """
  per_epoch = n // batch_size
  return np.arange(batch_size) * per_epoch + step % per_epoch


def _prefix(carry: Any, rows: int) -> Any:
  return jax.tree_util.tree_map(lambda a: a[:rows], carry)


def evaluate(
  eval_fn: LossFn | StatefulLossFn,
  params: Any,
  data: Any,
  *,
  batch_size: int = 256,
  key: jax.Array | None = None,
  stateful: bool = False,
  _jitted: dict | None = None,
) -> dict[str, float]:
  """Mean loss and metrics of ``eval_fn`` over ``data``, weighted by batch size.

  ``eval_fn`` has the signature of a loss function (``(params, batch, key)``)
  and should not drop out. Full batches share one compiled shape; a last
  partial batch is evaluated at its own size.

  With ``stateful``, ``data`` holds consecutive windows in order and
  ``eval_fn(params, batch, key, carry) -> (loss or (loss, metrics),
  new_carry)`` is a stateful loss (see :func:`fit`). The ``N`` windows are cut
  into ``S = min(batch_size, N)`` or fewer streams of ``K = ceil(N / S)``
  consecutive windows (the last stream may be shorter), read in order with
  each stream's state carried from one window to the next; every window is
  evaluated once. A window thus sees up to ``K - 1`` windows of context
  before it, where a stateless evaluation starts each from the initial
  state: ``batch_size=1`` reads ``data`` as one stream, with the most context.

  Args:
    eval_fn: ``eval_fn(params, batch, key) -> loss`` or ``(loss, metrics)``;
      with ``stateful``, the stateful form above.
    params: the params to evaluate.
    data: a pytree of arrays with a shared leading axis ``N``.
    batch_size: examples per batch; with ``stateful``, the most streams.
    key: the PRNG key passed to every batch; ``jax.random.key(0)`` by default.
    stateful: carry the state across consecutive windows, as above.

  Returns:
    A dict of floats, ``{"loss": ..., **metrics}``.

  Example:
    >>> def eval_fn(params, batch, key):
    ...   _, hs = jaxlstm.gru(params, batch["xs"])
    ...   return jnp.mean(hs ** 2), {"max_abs": jnp.abs(hs).max()}
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> data = {"xs": np.ones((10, 6, 3), np.float32)}
    >>> metrics = jaxlstm.evaluate(eval_fn, params, data, batch_size=4)  # batches of 4, 4 and 2
    >>> sorted(metrics), 0.0 < metrics["loss"] < 1.0
    (['loss', 'max_abs'], True)

    A stateful evaluation: 10 windows of one sequence, read as one stream, each window starting from the
    state where the one before it ended.

    >>> def stateful_fn(params, batch, key, carry):
    ...   state, hs = jaxlstm.gru(params, batch["xs"], carry)
    ...   return jnp.mean(hs ** 2), state
    >>> seq = np.sin(np.arange(60, dtype=np.float32))[:, None] * np.ones((1, 3), np.float32)  # (60, 3)
    >>> windows = {"xs": seq.reshape(10, 6, 3)}
    >>> streamed = jaxlstm.evaluate(stateful_fn, params, windows, batch_size=1, stateful=True)["loss"]
    >>> _, hs = jaxlstm.gru(params, seq[None])
    >>> bool(np.isclose(streamed, float(jnp.mean(hs ** 2)), rtol=1e-5))  # the same as the whole sequence at once
    True
  """
  n = num_examples(data)
  check_loss_fn("eval_fn", eval_fn, stateful=stateful)
  fn = _jitted.get("fn") if _jitted else None
  if fn is None:
    fn = jax.jit(_stateful_with_metrics(eval_fn) if stateful else _with_metrics(eval_fn))
    if _jitted is not None:
      _jitted["fn"] = fn
  key = jax.random.key(0) if key is None else key
  totals: dict[str, float] = {}

  def add(loss, metrics, rows):
    for name, value in {"loss": loss, **metrics}.items():
      totals[name] = totals.get(name, 0.0) + float(value) * rows

  if stateful:
    per_stream = -(-n // min(batch_size, n))  # K = ceil(N / S)
    carry = None
    for k in range(per_stream):
      # Stream j holds windows [j K, min(j K + K, N)): those with a k-th window are a prefix of the rows,
      # of one of two sizes, so there are at most two compiled shapes (and one more for carry=None).
      rows = -(-(n - k) // per_stream)
      batch = take(data, np.arange(rows) * per_stream + k)
      loss, (metrics, carry) = fn(params, batch, key, None if carry is None else _prefix(carry, rows))
      add(loss, metrics, rows)
  else:
    for start in range(0, n, batch_size):
      idx = np.arange(start, min(start + batch_size, n))
      loss, metrics = fn(params, take(data, idx), key)
      add(loss, metrics, len(idx))
  return {name: total / n for name, total in totals.items()}


class History(list):
  """The list of evaluation records of a :func:`fit` run, each a dict with ``step``.

  ``selected`` is the record of the params that :func:`fit` returned with
  ``restore_best=True`` (possibly from before a resume), else ``None``.

  Example:
    >>> from jaxlstm.train import History
    >>> history = History([{"step": 10, "val_loss": 0.5}, {"step": 20, "val_loss": 0.3},
    ...                    {"step": 30, "val_loss": 0.4}])
    >>> history.best()["step"], history.best("step", mode="max")["step"], history.best("val_accuracy")
    (20, 30, None)
  """

  selected: dict | None = None

  def best(self, monitor: str = "val_loss", mode: str = "min") -> dict | None:
    """The first record with the lowest (``mode="min"``) or highest ``monitor``; ``None`` if no record has it."""
    rows = [r for r in self if monitor in r]
    if not rows:
      return None
    return (min if mode == "min" else max)(rows, key=lambda r: r[monitor])


def _fmt(metrics: dict) -> str:
  return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))


class _Silent:
  """No progress output; messages such as early stopping are still printed."""

  def step(self, done: int, meter) -> None:
    pass

  def evaluated(self, record: dict) -> None:
    pass

  def write(self, text: str) -> None:
    print(text, flush=True)

  def close(self) -> None:
    pass


class _Lines(_Silent):
  """One line per evaluation, for logs that are not a terminal (batch jobs, CI, notebooks)."""

  def __init__(self, total: int):
    self.total = total

  def evaluated(self, record: dict) -> None:
    done, rate = record["step"], record.get("steps_per_s", 0.0)
    eta = (self.total - done) / rate if rate > 0 else float("nan")
    shown = {
      k: v
      for k, v in record.items()
      if k not in ("step", "epoch", "steps_per_s", "grad_norm") and not k.startswith(("examples_per_s", "mem_"))
    }
    print(f"step {done}/{self.total}: {_fmt(shown)} | {rate:.3g} steps/s, ETA {eta:.0f} s", flush=True)


class _Bar(_Silent):
  """A tqdm bar with the running training metrics and the latest evaluation."""

  def __init__(self, total: int, initial: int):
    from tqdm.auto import tqdm

    self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, leave=True)
    self.total = total
    self.last_eval: dict[str, str] = {}

  def step(self, done: int, meter) -> None:
    self.bar.update(1)
    if done % 10 == 0 or done == self.total:
      shown = {k: f"{v:.4g}" for k, v in meter.means().items() if k != "grad_norm"}
      self.bar.set_postfix({**shown, **self.last_eval}, refresh=False)

  def evaluated(self, record: dict) -> None:
    self.last_eval = {k: f"{v:.4g}" for k, v in record.items() if k.startswith("val_") and isinstance(v, float)}

  def write(self, text: str) -> None:
    self.bar.write(text)

  def close(self) -> None:
    self.bar.close()


def _progress(total: int, initial: int, progress: bool | str | None):
  """The progress reporter for ``fit(progress=...)``: see :func:`fit`."""
  if progress is None:
    progress = True if sys.stdout.isatty() else "lines"
  if progress == "lines":
    return _Lines(total)
  if progress is True:
    return _Bar(total, initial)
  if progress is False:
    return _Silent()
  raise ValueError(f"progress must be True, False, 'lines' or None; got {progress!r}")


class _Meter:
  """Training metrics summed over the steps since the last record, and how long those steps took."""

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self.sums: dict[str, float] = {}
    self.count = 0
    self.since = time.perf_counter()

  def add(self, metrics: dict) -> None:
    for name, value in metrics.items():
      self.sums[name] = self.sums.get(name, 0.0) + float(value)
    self.count += 1

  def means(self) -> dict[str, float]:
    return {name: total / self.count for name, total in self.sums.items()}

  def summary(self, batch_size: int, n_dev: int) -> dict[str, float]:
    """The means and the throughput since the last :meth:`reset`."""
    steps_per_s = self.count / max(time.perf_counter() - self.since, 1e-9)
    return {**self.means(), "steps_per_s": steps_per_s, "examples_per_s_per_device": steps_per_s * batch_size / n_dev}


class _Best:
  """The best ``monitor`` value so far, the params that reached it, and the evaluations since.

  Only a strict improvement counts, so of equal values the first stays the best, as in
  :meth:`History.best`; records without ``monitor`` are ignored.

  With a ``directory`` the tracker survives a resume: ``best.json`` (written
  atomically) holds its value, step, patience count and record, and
  ``best/`` holds the best params when they are kept. A resumed run then
  stops early, and restores the best params, exactly as the uninterrupted
  run would have.
  """

  def __init__(self, monitor: str, mode: str, patience: int | None, keep_params: bool, directory: str | None = None):
    self.monitor, self.mode, self.patience, self.keep_params = monitor, mode, patience, keep_params
    self.value: float | None = None  # the best monitor value
    self.record: dict | None = None  # the best evaluation record
    self.params = None  # kept only with keep_params, as holding them keeps a second set of params alive
    self.waited = 0
    self.last_step = -1  # the last evaluation counted, so that one repeated after a resume is not counted twice
    self.stopped = False
    self.directory = directory
    self._ckpt: Checkpointer | None = None

  @property
  def _json(self) -> str:
    assert self.directory is not None  # read only with a directory
    return os.path.join(self.directory, "best.json")

  def _params_ckpt(self) -> Checkpointer:
    if self._ckpt is None:
      assert self.directory is not None  # kept only with a directory
      from jaxlstm.checkpoint import Checkpointer  # orbax loads only when checkpointing

      # Two kept: best.json names the step to restore, and the older one must survive until it is rewritten.
      self._ckpt = Checkpointer(os.path.join(self.directory, "best"), keep=2)
    return self._ckpt

  def load(self, like: Any) -> None:
    """Takes up the saved tracker, if any; ``like`` has the structure of the params."""
    if self.directory is None or not os.path.exists(self._json):
      return
    with open(self._json) as f:
      saved = json.load(f)
    self.value, self.waited, self.record = saved["value"], saved["waited"], saved["record"]
    self.last_step, self.stopped = saved["last_step"], saved["stopped"]
    if self.keep_params and self.record is not None:
      self.params = self._params_ckpt().restore(like, step=self.record["step"])

  def _save(self, improved: bool) -> None:
    if self.directory is None:
      return
    if improved and self.keep_params:
      assert self.record is not None  # set by the improvement
      self._params_ckpt().save(self.record["step"], distributed.to_host(self.params))
    tmp = self._json + ".tmp"
    with open(tmp, "w") as f:
      json.dump(
        {
          "monitor": self.monitor,
          "mode": self.mode,
          "value": self.value,
          "waited": self.waited,
          "last_step": self.last_step,
          "stopped": self.stopped,
          "record": self.record,
        },
        f,
      )
    os.replace(tmp, self._json)

  def update(self, record: dict, params: Any) -> bool:
    """Takes an evaluation record and the params it evaluated; returns whether to stop early."""
    if self.monitor not in record or record["step"] <= self.last_step:
      return False
    self.last_step = record["step"]
    value = record[self.monitor]
    improved = self.value is None or (value < self.value if self.mode == "min" else value > self.value)
    if improved:
      self.value, self.waited, self.record = value, 0, _plain(record)
      if self.keep_params:
        self.params = params
    else:
      self.waited += 1
      self.stopped = self.patience is not None and self.waited >= self.patience
    self._save(improved)
    return self.stopped

  def close(self) -> None:
    if self._ckpt is not None:
      self._ckpt.close()


def _plain(record: dict) -> dict:
  """``record`` with its values as plain Python numbers, for JSON."""
  return {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}


def _open_checkpoints(directory: str | None, save_every: int, keep: int, resume: bool, state: TrainState):
  """The run's ``Checkpointer`` (``None`` without ``directory``) and its state, restored when resuming."""
  if directory is None:
    if resume:
      raise ValueError("resume=True needs checkpoint_dir")
    return None, state
  from jaxlstm.checkpoint import Checkpointer  # orbax loads only when checkpointing

  ckpt = Checkpointer(directory, save_every=save_every, keep=keep)
  if resume and ckpt.latest_step() is not None:
    # Checkpoints hold host arrays, so a run may resume on another device count.
    state = ckpt.restore(state)
  return ckpt, state


def _train_batch(data: Any, n: int, batch_size: int, step: int, seed: int, mesh, stateful: bool) -> Any:
  idx = stream_indices(n, batch_size, step) if stateful else batch_indices(n, batch_size, step, seed)
  batch = take(data, idx)
  return batch if mesh is None else distributed.shard_batch(batch, mesh)


def _zero_carry(loss_fn: Callable[..., Any], params: Any, batch: Any) -> Any:  # a StatefulLossFn
  """Zeros shaped as the carry that ``loss_fn`` returns, so that a stateful run's state (and its checkpoints)
  has one structure from step 0; the first step of every epoch passes ``carry=None`` instead."""
  out = jax.eval_shape(loss_fn, params, batch, jax.random.key(0), None)
  if not (isinstance(out, tuple) and len(out) == 2) or isinstance(out[1], dict):
    got = type(out).__name__ if not isinstance(out, tuple) else f"a tuple whose second item is {type(out[1]).__name__}"
    raise ValueError(
      f"stateful=True needs loss_fn(params, batch, key, carry) to return (loss or (loss, metrics), "
      f"new_carry); got {got}"
    )
  return jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), out[1])


def _validate(
  eval_fn: LossFn | StatefulLossFn, data: Any, params: Any, *, batch_size: int, mesh, cache: dict, stateful: bool
) -> dict[str, float]:
  """The ``val_``-prefixed evaluation record of ``params`` on ``data``; empty without ``data``."""
  if data is None:
    return {}
  if mesh is not None:
    params = distributed.to_host(params)
  val = evaluate(eval_fn, params, data, batch_size=batch_size, stateful=stateful, _jitted=cache)
  return {f"val_{k}": v for k, v in val.items()}


def fit(
  params: Any,
  loss_fn: LossFn | StatefulLossFn,
  train_data: Any,
  *,
  optimizer: optax.GradientTransformation | None = None,
  batch_size: int = 32,
  epochs: int | None = None,
  steps: int | None = None,
  validation_data: Any = None,
  eval_fn: LossFn | StatefulLossFn | None = None,
  eval_every: int | None = None,
  eval_batch_size: int = 256,
  early_stopping: int | None = None,
  monitor: str = "val_loss",
  mode: str = "min",
  restore_best: bool = False,
  checkpoint_dir: str | None = None,
  save_every: int | None = None,
  keep: int = 3,
  resume: bool = False,
  seed: int = 0,
  progress: bool | str | None = None,
  callbacks: list[Callable[[dict], None]] | None = None,
  devices: str | int | None = None,
  stateful: bool = False,
) -> tuple[Any, History]:
  """Trains ``params`` on ``train_data``, like Keras' ``Model.fit``.

  Args:
    params: initial params (any pytree).
    loss_fn: ``loss_fn(params, batch, key) -> loss`` or ``(loss, metrics)``;
      ``batch`` has the structure of ``train_data`` with leading size
      ``batch_size``.
    train_data: a pytree of arrays with a shared leading axis ``N``.
    optimizer: optax optimizer; Adam with learning rate 1e-3 by default.
    batch_size: examples per step; ``N`` must be at least this.
    epochs: number of passes over the data (``N // batch_size`` steps each).
    steps: total number of steps; give ``epochs`` or ``steps``, not both.
    validation_data: optional pytree like ``train_data``, evaluated every
      ``eval_every`` steps (default: once per epoch) and at the end, with
      metrics prefixed ``val_``.
    eval_fn: loss function for evaluation (no dropout); ``loss_fn`` by default.
    eval_every: steps between evaluations.
    eval_batch_size: batch size for evaluation.
    early_stopping: stop after this many evaluations without improvement of
      ``monitor`` (Keras' ``patience``).
    monitor: the record key that early stopping watches, e.g. ``"val_loss"``.
    mode: ``"min"`` or ``"max"`` for ``monitor``.
    restore_best: return the params of the best evaluation, the record
      ``history.selected``, instead of the last.
    checkpoint_dir: save the train state there every ``save_every`` steps
      (default: at each evaluation) and at the end, keeping the last ``keep``.
      With ``early_stopping`` or ``restore_best``, the best evaluation so far
      is kept there too (``best.json``, and ``best/`` for its params), so that
      a resumed run selects and stops as the uninterrupted one would.
    keep: checkpoints to keep.
    resume: continue from the latest checkpoint in ``checkpoint_dir``.
    seed: seeds the batch order and the per-step PRNG keys.
    progress: ``True``: a tqdm bar with the running training metrics and the
      latest evaluation; ``"lines"``: one printed line per evaluation (step,
      metrics, steps/s, ETA), for logs; ``False``: nothing; ``None`` (the
      default): the bar on a terminal, lines elsewhere (batch jobs, CI,
      notebooks).
    callbacks: functions called with each evaluation record.
    devices: data parallelism: ``"all"`` or a number of devices (of every
      process, after :func:`jaxlstm.distributed.maybe_initialize`). The batch is
      split across them, so ``batch_size`` must divide by their count. The
      records then include ``examples_per_s_per_device`` (and peak memory
      per device where the backend reports it). ``None`` uses the default
      device.
    stateful: truncated backpropagation through time over streams, as Keras'
      ``stateful=True``. ``train_data`` holds consecutive windows in order,
      read as ``batch_size`` parallel streams (:func:`stream_indices`): row
      ``j`` of each step is the window after row ``j`` of the step before. The
      loss is ``loss_fn(params, batch, key, carry) -> (loss or (loss,
      metrics), new_carry)``: ``carry`` is the previous step's ``new_carry``
      (each row's final state), or ``None`` at every epoch start, meaning
      "start every row from the model's initial state". The carry enters as
      data, so the gradient stops at the batch boundary. A row that must
      start afresh inside an epoch (a new document) is the loss's to reset,
      from a flag in its batch (:func:`jaxlstm.models.model_apply`'s users
      read ``batch["reset"]``). The carry is part of the checkpointed
      :class:`TrainState`, so a resumed run continues exactly. Validation is
      stateful too (:func:`evaluate` with ``stateful=True``, at most
      ``eval_batch_size`` streams), and ``eval_fn`` takes ``carry`` as
      ``loss_fn`` does. Runs on one device.

  Returns:
    ``(params, history)``: the trained params and a :class:`History` of
    evaluation records ``{"step", "epoch", "loss", ..., "val_loss", ...}``
    where training metrics are averaged over the steps since the last record.

  Raises:
    ValueError: for a ``batch_size`` outside ``[1, N]``, both or neither of
      ``epochs`` and ``steps``, a bad ``mode``, ``resume`` without
      ``checkpoint_dir``, or a loss function whose signature does not fit
      ``stateful``.

  Example:
    >>> rng = np.random.default_rng(0)
    >>> data = {"xs": rng.standard_normal((16, 6, 3)).astype(np.float32),
    ...         "ys": rng.standard_normal((16,)).astype(np.float32)}
    >>> def loss_fn(params, batch, key):
    ...   _, hs = jaxlstm.lstm(params, batch["xs"])
    ...   return jnp.mean((hs[:, -1, 0] - batch["ys"]) ** 2)
    >>> params, history = jaxlstm.fit(jaxlstm.lstm_init(jax.random.key(0), 3, 5), loss_fn, data, batch_size=8,
    ...                               epochs=2, validation_data=data, progress=False)
    >>> [record["step"] for record in history], {"loss", "val_loss", "steps_per_s"} <= set(history[-1])
    ([2, 4], True)
  """
  n = num_examples(train_data)
  if batch_size < 1 or batch_size > n:
    raise ValueError(f"batch_size must be in [1, {n}] (the number of training examples); got {batch_size}")
  if (epochs is None) == (steps is None):
    raise ValueError(f"give exactly one of epochs or steps; got epochs={epochs}, steps={steps}")
  per_epoch = n // batch_size
  if steps is not None:
    total = steps
  else:
    assert epochs is not None  # exactly one of the two, checked above
    total = epochs * per_epoch
  if total < 1:
    raise ValueError(f"the run must have at least one step; got {total}")
  if mode not in ("min", "max"):
    raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}")
  eval_every = eval_every or per_epoch
  optimizer = optimizer if optimizer is not None else optax.adam(1e-3)
  check_loss_fn("loss_fn", loss_fn, stateful=stateful)
  if eval_fn is not None:
    check_loss_fn("eval_fn", eval_fn, stateful=stateful)
  if stateful and devices is not None:
    raise ValueError(f"stateful=True runs on one device; got devices={devices!r} (leave it None)")
  devs = distributed.resolve_devices(devices)
  mesh = None if devs is None else distributed.make_mesh(devs)
  if mesh is not None:
    distributed.check_divisible(batch_size, mesh)
  train_step = make_train_step(loss_fn, optimizer, mesh=mesh, stateful=stateful)
  validate = functools.partial(
    _validate, eval_fn or loss_fn, validation_data, batch_size=eval_batch_size, mesh=mesh, cache={}, stateful=stateful
  )
  state = init_train_state(params, optimizer, seed)
  if stateful:
    state = state._replace(carry=_zero_carry(loss_fn, params, take(train_data, stream_indices(n, batch_size, 0))))
  ckpt, state = _open_checkpoints(checkpoint_dir, save_every or eval_every, keep, resume, state)
  if mesh is not None:
    state = distributed.replicate(state, mesh)
  n_dev = 1 if mesh is None else mesh.devices.size

  history = History()
  tracking = early_stopping is not None or restore_best
  best = _Best(monitor, mode, early_stopping, keep_params=restore_best, directory=checkpoint_dir if tracking else None)
  if resume:
    best.load(distributed.to_host(state.params))
  meter = _Meter()
  start = int(state.step)
  bar = _progress(total, start, progress)
  if best.stopped:
    bar.write(
      f"the run stopped early at step {best.last_step}: {monitor} had not improved for {best.waited} "
      f"evaluations; nothing left to train"
    )
  stop = False
  try:
    for step in range(start, total if not best.stopped else start):
      done = step + 1
      batch = _train_batch(train_data, n, batch_size, step, seed, mesh, stateful)
      # An epoch start passes carry=None: every stream starts again from the model's initial state.
      state, metrics = train_step(state, batch, fresh=step % per_epoch == 0) if stateful else train_step(state, batch)
      meter.add(metrics)
      bar.step(done, meter)
      evaluate_now = done % eval_every == 0 or done == total
      if evaluate_now:
        record = {
          "step": done,
          "epoch": done / per_epoch,
          **meter.summary(batch_size, n_dev),
          **distributed.device_memory(),
          **validate(state.params),
        }
        history.append(record)
        bar.evaluated(record)
        for cb in callbacks or ():
          cb(record)
        meter.reset()  # after the evaluation and the callbacks, so that their time is not counted as training
        stop = best.update(record, state.params)
      # After the evaluation: a checkpoint at step s then always has s's evaluation counted by the tracker.
      if ckpt is not None:
        ckpt.maybe_save(done, distributed.local_replica(state))
      if evaluate_now and stop:
        bar.write(f"early stopping at step {done}: {monitor} has not improved for {best.waited} evaluations")
        break
  except KeyboardInterrupt:
    # Keep the steps done so far: the state holds the last completed step, and resuming continues exactly.
    if ckpt is not None and ckpt.latest_step() != int(state.step):
      ckpt.save(int(state.step), distributed.to_host(state))
    raise
  finally:
    bar.close()
  best.close()
  history.selected = best.record if restore_best else None
  if ckpt is not None:
    if ckpt.latest_step() != int(state.step):
      ckpt.save(int(state.step), distributed.to_host(state))
    ckpt.close()
  params = best.params if best.params is not None else state.params
  if mesh is not None:
    params = distributed.to_host(params)
  return params, history
