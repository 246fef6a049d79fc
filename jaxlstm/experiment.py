"""A training run on a named task: config, metrics log, checkpoints, evaluation and sampling.

A run lives in one directory::

    out/config.json       the RunConfig, so that eval, sample and --resume rebuild the same model
    out/metrics.jsonl     one JSON object per evaluation on the validation split (step, val_* metrics),
                          then one with the test_* metrics of the selected params
    out/summary.json      the end of the run: the selected step, its validation and test metrics, the
                          task's baselines, the units and the wall time
    out/checkpoints/      orbax checkpoints of the train state (and of the best params, with restore_best)

Model selection (early stopping, restore_best) reads the validation split
only; the test split is read once, when the run ends.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp

from jaxlstm.checkpoint import Checkpointer
from jaxlstm.models import SequenceModel, initial_states, model_apply, model_init, task_loss
from jaxlstm.optim import make_optimizer, make_schedule
from jaxlstm.regularizers import check_rate
from jaxlstm.train import evaluate, fit, init_train_state

DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
PER_STEP_KINDS = ("seq_classify", "lm")
# A stateful run evaluates each split as this many streams: one, so that every window sees all the text before it.
STATEFUL_EVAL_STREAMS = 1


@dataclasses.dataclass
class RunConfig:
  """Everything that defines a run; saved as ``config.json``.

  ``task`` and ``task_options`` name the data (:func:`jaxlstm.tasks.make_task`); ``cell`` to
  ``dropout`` the model (:func:`jaxlstm.models.model_init`); ``optimizer`` to ``weight_decay`` the
  optimizer (:func:`jaxlstm.optim.make_optimizer`); ``batch_size`` to ``restore_best`` the loop
  (:func:`jaxlstm.fit`); ``dtype`` is ``"float32"`` or ``"bfloat16"``, the compute dtype.
  ``input_dropout``, ``recurrent_dropout``, ``zoneout`` and ``weight_drop`` are the recurrent
  regularizers of every layer (:mod:`jaxlstm.regularizers`): masks in training, and zoneout's expectation
  in evaluation. ``learn_initial_state`` gives the model a trained initial state (``model_init``'s). ``stateful``, for
  an ``lm`` task, trains with truncated backpropagation through time over ``batch_size`` streams of the
  training text (``fit(stateful=True)``) and evaluates each split as one stream
  (``evaluate(stateful=True)``). A config saved before a field existed loads with its default.

  These are the library's defaults; :func:`jaxlstm.presets.resolve` gives a
  task's own (the command line's defaults).

  Example:
    >>> from jaxlstm.experiment import RunConfig
    >>> cfg = RunConfig(task="copy", cell="gru", hidden=64, steps=500)
    >>> cfg.validate()
    >>> RunConfig(hidden=0).validate()
    Traceback (most recent call last):
    ValueError: hidden must be >= 1; got 0
  """

  task: str = "adding"
  task_options: dict = dataclasses.field(default_factory=dict)
  cell: str = "lstm"
  activation: str = "tanh"
  hidden: int = 128
  layers: int = 1
  bidirectional: bool = False
  forget_bias: float = 1.0
  dropout: float = 0.0
  input_dropout: float = 0.0
  recurrent_dropout: float = 0.0
  zoneout: float = 0.0
  weight_drop: float = 0.0
  optimizer: str = "adam"
  lr: float = 1e-3
  schedule: str = "constant"
  warmup: int = 0
  clip_norm: float | None = 1.0
  weight_decay: float | None = None  # None: the optimizer's own (optax.adamw's 1e-4; none for the others)
  batch_size: int = 64
  steps: int = 2000
  eval_every: int = 200
  save_every: int | None = None
  keep: int = 3
  early_stopping: int | None = None
  restore_best: bool = False
  seed: int = 0
  dtype: str = "float32"
  learn_initial_state: bool = False
  stateful: bool = False

  def validate(self) -> None:
    """Raises ``ValueError`` for an unknown ``dtype``, a size or step count below 1, a non-positive ``lr``,
    a ``dropout`` or regularizer rate outside ``[0, 1)``, or a ``weight_decay`` that is negative or given to an
    optimizer other than ``"adamw"``."""
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype must be one of {sorted(DTYPES)}; got {self.dtype!r}")
    for name in ("hidden", "layers", "batch_size", "steps", "eval_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
    if self.lr <= 0:
      raise ValueError(f"lr must be positive; got {self.lr}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
    for name in ("input_dropout", "recurrent_dropout", "zoneout", "weight_drop"):
      check_rate(name, getattr(self, name))
    if self.weight_decay is not None and self.weight_decay < 0:
      raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay}")
    if self.weight_decay is not None and self.optimizer != "adamw":
      raise ValueError(f"weight_decay needs optimizer 'adamw' (decoupled decay); got optimizer {self.optimizer!r}")


def check_stateful(task, cfg: RunConfig) -> None:
  """Refuses ``cfg.stateful`` for a task whose windows are not consecutive pieces of one text.

  Raises:
    ValueError: ``cfg.stateful`` with a task whose kind is not ``"lm"``.

  Example:
    >>> import types
    >>> from jaxlstm.experiment import RunConfig, check_stateful
    >>> check_stateful(types.SimpleNamespace(name="adding", kind="regress"), RunConfig(stateful=True))
    Traceback (most recent call last):
    ValueError: stateful needs a language-model task ('lm', such as 'text'), ...; got task 'adding' of kind 'regress'
  """
  if cfg.stateful and task.kind != "lm":
    raise ValueError(
      f"stateful needs a language-model task ('lm', such as 'text'), whose windows follow each "
      f"other in the text; got task {task.name!r} of kind {task.kind!r}"
    )


def load_task(cfg: RunConfig):
  """The :class:`~jaxlstm.tasks.Task` that ``cfg`` names, built from its options and seed.

  Example:
    >>> from jaxlstm.experiment import RunConfig, load_task
    >>> task = load_task(RunConfig(task="adding", task_options={"T": 5, "n_train": 8, "n_val": 4, "n_test": 4}))
    >>> task.kind, task.train.xs.shape
    ('regress', (8, 5, 2))
  """
  from jaxlstm.tasks import make_task  # data code loads lazily: numpy, sklearn, statsmodels

  return make_task(cfg.task, seed=cfg.seed, **cfg.task_options)


def split_batch(split) -> dict:
  """A task split as a dict of arrays, leaving out the absent ``lengths`` and ``mask``.

  Example:
    >>> from jaxlstm.experiment import RunConfig, load_task, split_batch
    >>> task = load_task(RunConfig(task="adding-var", task_options={"T": 5, "n_train": 8, "n_val": 4, "n_test": 4}))
    >>> sorted(split_batch(task.train))  # variable lengths: the split has them
    ['lengths', 'xs', 'ys']
  """
  batch = {"xs": split.xs, "ys": split.ys}
  if split.lengths is not None:
    batch["lengths"] = split.lengths
  if split.mask is not None:
    batch["mask"] = split.mask
  return batch


def make_loss(task, cfg: RunConfig, *, train: bool, stateful: bool | None = None):
  """``loss_fn(params, batch, key)`` of the task's kind, with dropout and the regularizers' masks only when
  ``train`` (in evaluation zoneout takes its expectation).

  With ``stateful`` (``cfg.stateful`` when ``None``) the loss is the stateful one of :func:`jaxlstm.fit`:
  ``loss_fn(params, batch, key, carry) -> ((loss, metrics), states)``, starting from ``carry`` (the previous
  window's final states) or, when ``carry`` is ``None``, from the model's initial states. A row whose
  ``batch["reset"]`` ``(B,)`` flag is set starts from the initial states too.

  Example:
    >>> from jaxlstm.experiment import RunConfig, init_model, load_task, make_loss, split_batch
    >>> cfg = RunConfig(task="adding", task_options={"T": 5, "n_train": 8, "n_val": 4, "n_test": 4}, hidden=4)
    >>> task = load_task(cfg)
    >>> loss_fn = make_loss(task, cfg, train=False)
    >>> loss, metrics = loss_fn(init_model(task, cfg), split_batch(task.test), jax.random.key(0))
    >>> loss.shape, sorted(metrics)
    ((), ['mse'])
  """
  per_step = task.kind in PER_STEP_KINDS
  vocab = task.input_size if task.kind == "lm" else None
  stateful = cfg.stateful if stateful is None else stateful

  regularizers = dict(zoneout=cfg.zoneout)
  if train:
    regularizers.update(
      input_dropout=cfg.input_dropout, recurrent_dropout=cfg.recurrent_dropout, weight_drop=cfg.weight_drop
    )

  def run(params, batch, key, states, return_state):
    # Evaluation gets no key: with it zoneout would draw masks instead of taking its expectation.
    return model_apply(
      params,
      batch["xs"],
      per_step=per_step,
      lengths=batch.get("lengths"),
      mask=batch.get("mask"),
      dropout=cfg.dropout if train else 0.0,
      key=key if train else None,
      compute_dtype=DTYPES[cfg.dtype],
      vocab_size=vocab,
      states=states,
      return_state=return_state,
      **regularizers,
    )

  def loss_fn(params: SequenceModel, batch: dict, key):
    return task_loss(task.kind, run(params, batch, key, None, False), batch)

  def stateful_loss_fn(params: SequenceModel, batch: dict, key, carry):
    if carry is not None and batch.get("reset") is not None:
      fresh = initial_states(params, batch["reset"].shape)
      carry = jax.tree_util.tree_map(
        lambda f, c: jnp.where(batch["reset"].reshape(batch["reset"].shape + (1,) * (c.ndim - 1)), f, c), fresh, carry
      )
    out, states = run(params, batch, key, carry, True)
    return task_loss(task.kind, out, batch), states

  return stateful_loss_fn if stateful else loss_fn


def init_model(task, cfg: RunConfig) -> SequenceModel:
  """The run's freshly initialized :class:`~jaxlstm.models.SequenceModel`, sized for ``task``, seeded by ``cfg.seed``.

  Example:
    >>> from jaxlstm.experiment import RunConfig, init_model, load_task
    >>> cfg = RunConfig(task="adding", task_options={"T": 5, "n_train": 8, "n_val": 4, "n_test": 4},
    ...                 hidden=4, cell="rnn")
    >>> model = init_model(load_task(cfg), cfg)
    >>> model.rnn[0].w_x.shape, model.rnn[0].activation, model.head.w.shape
    ((2, 4), 'tanh', (4, 1))
  """
  return model_init(
    jax.random.key(cfg.seed),
    task.input_size,
    task.num_outputs,
    hidden=cfg.hidden,
    layers=cfg.layers,
    cell=cfg.cell,
    bidirectional=cfg.bidirectional,
    forget_bias=cfg.forget_bias,
    activation=cfg.activation if cfg.cell == "rnn" else None,
    learn_initial_state=cfg.learn_initial_state,
  )


def make_run_optimizer(cfg: RunConfig):
  """The optax optimizer of ``cfg``: its schedule over ``cfg.steps`` and its gradient clipping.

  Example:
    >>> from jaxlstm.experiment import RunConfig, make_run_optimizer
    >>> opt = make_run_optimizer(RunConfig(optimizer="sgd", lr=0.1, schedule="cosine", warmup=10, steps=100))
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> opt_state = opt.init(params)
  """
  lr = make_schedule(cfg.lr, schedule=cfg.schedule, warmup_steps=cfg.warmup, total_steps=cfg.steps)
  extra = {} if cfg.weight_decay is None else {"weight_decay": cfg.weight_decay}
  return make_optimizer(cfg.optimizer, lr, clip_norm=cfg.clip_norm, **extra)


def derived_metrics(task, metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
  """Adds RMSE (in the data's original units when the task says how) to a regression's metrics.

  Args:
    task: the run's task; its ``info["target_scale"]``, when present, undoes the targets' scaling.
    metrics: the metrics of one evaluation.
    prefix: the prefix of the metrics' names, e.g. ``"val_"``.

  Returns:
    ``metrics`` and, for a regression, ``{prefix}rmse``.

  Example:
    >>> import types
    >>> from jaxlstm.experiment import derived_metrics
    >>> task = types.SimpleNamespace(kind="regress", info={"target_scale": 10.0})  # targets were divided by 10
    >>> derived_metrics(task, {"val_mse": 0.25}, "val_")
    {'val_mse': 0.25, 'val_rmse': 5.0}
  """
  out = dict(metrics)
  mse = metrics.get(f"{prefix}mse")
  if task.kind == "regress" and mse is not None:
    scale = float(task.info.get("target_scale", 1.0))
    out[f"{prefix}rmse"] = math.sqrt(max(mse, 0.0)) * scale
  return out


def train_run(
  cfg: RunConfig,
  out: str,
  *,
  resume: bool = False,
  overwrite: bool = False,
  progress: bool | None = None,
  devices: str | int | None = None,
) -> list[dict]:
  """Trains ``cfg``, evaluates it on the test split, and writes the run's files under ``out``.

  Training validates on the task's validation split; with ``cfg.restore_best``
  the params of the best validation evaluation are selected, else the last
  ones. Those params are then evaluated once on the test split, and the
  result goes to ``metrics.jsonl`` (a record with ``"split": "test"``) and
  ``summary.json``.

  With ``resume``, the saved config is used (``cfg.steps`` may extend it) and
  training continues from the latest checkpoint. A directory that already
  holds a run is refused unless ``resume`` or ``overwrite`` (which deletes
  that run's files first) is given: its checkpoints would otherwise be taken
  for the new run's. ``devices`` is passed to :func:`jaxlstm.train.fit` for
  data parallelism.

  Returns:
    The records written to ``metrics.jsonl`` by this call: one per validation evaluation, then the
    test record.

  Raises:
    FileNotFoundError: with ``resume``, when ``out`` holds no run.
    FileExistsError: without ``resume`` or ``overwrite``, when ``out`` holds a run.
    ValueError: for an invalid ``cfg``, or both ``resume`` and ``overwrite``.

  Example:
    >>> import os
    >>> import tempfile
    >>> from jaxlstm.experiment import RunConfig, train_run
    >>> cfg = RunConfig(task="adding", task_options={"T": 5, "n_train": 8, "n_val": 4, "n_test": 4}, hidden=4,
    ...                 batch_size=4, steps=2, eval_every=2)
    >>> with tempfile.TemporaryDirectory() as out:
    ...   records = train_run(cfg, out, progress=False)
    ...   print(sorted(os.listdir(out)))
    ...   more = train_run(RunConfig(steps=4), out, resume=True, progress=False)  # the saved config, 2 more steps
    ['checkpoints', 'config.json', 'metrics.jsonl', 'summary.json']
    >>> [r["step"] for r in records], [r["step"] for r in more], sorted(records[0]) == sorted(more[0])
    ([2, 2], [4, 4], True)
    >>> records[-1]["split"], "test_rmse" in records[-1], "val_rmse" in records[0]
    ('test', True, True)
  """
  config_path = os.path.join(out, "config.json")
  metrics_path = os.path.join(out, "metrics.jsonl")
  checkpoints = os.path.join(out, "checkpoints")
  if resume and overwrite:
    raise ValueError("give resume (continue the run) or overwrite (replace it), not both")
  if resume:
    if not os.path.exists(config_path):
      raise FileNotFoundError(f"--resume needs a previous run in {out}, but {config_path} does not exist")
    saved = read_config(out)
    saved.steps = max(saved.steps, cfg.steps)
    cfg = saved
  cfg.validate()
  task = load_task(cfg)
  check_stateful(task, cfg)
  summary_path = os.path.join(out, "summary.json")
  existing = [p for p in (config_path, metrics_path, checkpoints, summary_path) if os.path.exists(p)]
  if existing and not resume and not overwrite:
    raise FileExistsError(
      f"{out} already holds a run ({', '.join(os.path.basename(p) for p in existing)}); "
      f"pass --resume to continue it or --overwrite to replace it"
    )
  # In a multi-host run every process trains; the first one writes the files, once every process has
  # looked for an existing run (else a later one would find the first one's new config and refuse).
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("jaxlstm: run directory checked")
  writer = jax.process_index() == 0
  os.makedirs(out, exist_ok=True)
  if writer:
    if overwrite:
      # Only the run's own files: anything else the user keeps in the directory stays.
      for path in existing:
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    with open(config_path, "w") as f:
      json.dump(dataclasses.asdict(cfg), f, indent=2)

  records: list[dict] = []

  def log(record: dict) -> None:
    record = derived_metrics(task, record, "val_")
    records.append(record)
    if writer:
      with open(metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")

  t0 = time.perf_counter()
  params, history = fit(
    init_model(task, cfg),
    make_loss(task, cfg, train=True),
    split_batch(task.train),
    optimizer=make_run_optimizer(cfg),
    batch_size=min(cfg.batch_size, len(task.train.xs)),
    steps=cfg.steps,
    validation_data=split_batch(task.val),
    eval_fn=make_loss(task, cfg, train=False),
    eval_every=cfg.eval_every,
    early_stopping=cfg.early_stopping,
    monitor=monitor(task),
    mode=task.mode,
    restore_best=cfg.restore_best,
    checkpoint_dir=checkpoints,
    save_every=cfg.save_every or cfg.eval_every,
    keep=cfg.keep,
    resume=resume,
    seed=cfg.seed,
    progress=progress,
    callbacks=[log],
    devices=devices,
    stateful=cfg.stateful,
    eval_batch_size=STATEFUL_EVAL_STREAMS if cfg.stateful else 256,
  )
  wall = time.perf_counter() - t0
  # The test split, read once: the params that model selection chose, or the last ones.
  selected = history.selected or (history[-1] if history else _last_record(metrics_path))
  test = derived_metrics(task, {f"test_{k}": v for k, v in test_metrics(task, cfg, params).items()}, "test_")
  final = {"step": selected["step"] if selected else 0, "split": "test", **test, "baselines": task.baselines}
  if cfg.stateful:
    # The same params, each test window from the initial state: what a stateless model is measured on.
    stateless = test_metrics(task, cfg, params, stateful=False)
    final["test_stateless"] = {f"test_{k}": v for k, v in stateless.items()}
  records.append(final)
  if writer:
    with open(metrics_path, "a") as f:
      f.write(json.dumps(final) + "\n")
    summary = {
      "task": task.name,
      "metric": task.metric,
      "mode": task.mode,
      "unit": task.units[task.metric],
      "selected_step": final["step"],
      "selected_by": f"{monitor(task)} (validation)" if cfg.restore_best else "last step",
      "last_step": history[-1]["step"] if history else final["step"],
      "test": test,
      "val": {k: v for k, v in derived_metrics(task, selected or {}, "val_").items() if k.startswith("val_")},
      "baselines": task.baselines,
      "units": {k: task.units[k] for k in _metric_names(test)},
      "train_seconds": wall,
      "config": dataclasses.asdict(cfg),
    }
    if cfg.stateful:
      summary["test_evaluation"] = (
        "stateful: the test text as one stream, each window starting from the state "
        "where the one before it ended; test_stateless starts every window afresh"
      )
      summary["test_stateless"] = final["test_stateless"]
    _write_json(os.path.join(out, "summary.json"), summary)
  return records


def test_metrics(task, cfg: RunConfig, params: SequenceModel, *, stateful: bool | None = None) -> dict[str, float]:
  """The metrics of ``params`` on the task's test split, as :func:`jaxlstm.evaluate` gives them.

  A stateful evaluation (``cfg.stateful`` when ``stateful`` is ``None``) reads the test windows as one stream
  in order (:data:`STATEFUL_EVAL_STREAMS`), carrying the state from each window to the next; a stateless
  one starts every window from the model's initial state.

  Example:
    >>> from jaxlstm.experiment import RunConfig, init_model, load_task, test_metrics
    >>> cfg = RunConfig(task="text", task_options={"T": 8, "max_chars": 2000}, hidden=4, stateful=True)
    >>> task = load_task(cfg)
    >>> params = init_model(task, cfg)
    >>> streamed, alone = test_metrics(task, cfg, params), test_metrics(task, cfg, params, stateful=False)
    >>> sorted(streamed) == sorted(alone), streamed["loss"] != alone["loss"]
    (True, True)
  """
  stateful = cfg.stateful if stateful is None else stateful
  return evaluate(
    make_loss(task, cfg, train=False, stateful=stateful),
    params,
    split_batch(task.test),
    batch_size=STATEFUL_EVAL_STREAMS if stateful else 256,
    stateful=stateful,
  )


def monitor(task) -> str:
  """The validation metric that model selection watches for ``task``.

  Accuracy for classifiers; for every other task the headline metric (MSE,
  RMSE, cross-entropy, bits per character) orders models as the loss does, so
  the loss is watched.

  Example:
    >>> import types
    >>> from jaxlstm.experiment import monitor
    >>> monitor(types.SimpleNamespace(metric="accuracy")), monitor(types.SimpleNamespace(metric="rmse"))
    ('val_accuracy', 'val_loss')
  """
  return "val_accuracy" if task.metric == "accuracy" else "val_loss"


def headline(task, metrics: dict, prefix: str = "test_") -> str:
  """One line: the task's headline metric with its unit, then its baselines in the same unit.

  Example:
    >>> from jaxlstm.experiment import headline
    >>> from jaxlstm.tasks import make_task
    >>> task = make_task("sunspots")
    >>> headline(task, {"test_rmse": 18.94})
    'test rmse 18.94 sunspot number (persistence 32.9, ar 19.14, mean 58.95)'
  """
  value = metrics[f"{prefix}{task.metric}"]
  base = ", ".join(f"{name} {v:.4g}" for name, v in task.baselines_of().items())
  label = f"{prefix.rstrip('_')} {task.metric.replace('_', ' ')}".strip()
  return f"{label} {value:.4g} {task.units[task.metric]}" + (f" ({base})" if base else "")


def _metric_names(metrics: dict) -> list[str]:
  return [k.split("_", 1)[1] for k in metrics if k.startswith(("test_", "val_"))]


def _last_record(path: str) -> dict | None:
  """The last validation record of a metrics file, for a resumed run that had nothing left to train."""
  if not os.path.exists(path):
    return None
  last = None
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      if record.get("split") != "test":
        last = record
  return last


def _write_json(path: str, value: Any) -> None:
  """Writes ``value`` to ``path`` atomically: a crash leaves the old file or the new one, never half of one."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, default=_jsonable)
  os.replace(tmp, path)


def _jsonable(value):
  if hasattr(value, "tolist"):
    return value.tolist()
  raise TypeError(f"not JSON serializable: {type(value).__name__}")


def read_config(out: str) -> RunConfig:
  """The :class:`RunConfig` saved in ``out/config.json``; keys it does not know are ignored.

  Raises:
    FileNotFoundError: ``out`` holds no ``config.json``.

  Example:
    >>> import dataclasses
    >>> import json
    >>> import os
    >>> import tempfile
    >>> from jaxlstm.experiment import RunConfig, read_config
    >>> with tempfile.TemporaryDirectory() as out:
    ...   with open(os.path.join(out, "config.json"), "w") as f:
    ...     json.dump({**dataclasses.asdict(RunConfig(cell="gru")), "from_a_newer_version": 1}, f)
    ...   print(read_config(out) == RunConfig(cell="gru"))
    True
  """
  path = os.path.join(out, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no run in {out}: {path} does not exist")
  with open(path) as f:
    raw = json.load(f)
  known = {f.name for f in dataclasses.fields(RunConfig)}
  return RunConfig(**{k: v for k, v in raw.items() if k in known})


def load_run(out: str):
  """The config, task and trained params of the run in ``out``: the selected ones, as its test figures are.

  Returns:
    ``(cfg, task, params, step)``: the run's :class:`RunConfig`, its task, and the params of the best
    validation evaluation (with ``cfg.restore_best``) or else of the latest checkpoint, and their step.

  Example:
    >>> import tempfile
    >>> from jaxlstm.experiment import RunConfig, load_run, train_run
    >>> with tempfile.TemporaryDirectory() as out:
    ...   _ = train_run(RunConfig(task="adding", task_options={"T": 5, "n_train": 8, "n_val": 4, "n_test": 4}, hidden=4,
    ...                           batch_size=4, steps=2, eval_every=2), out, progress=False)
    ...   cfg, task, params, step = load_run(out)
    >>> cfg.hidden, task.name, params.rnn[0].hidden_size, step
    (4, 'adding', 4, 2)
  """
  cfg = read_config(out)
  task = load_task(cfg)
  like = init_train_state(init_model(task, cfg), make_run_optimizer(cfg), cfg.seed)
  if cfg.stateful:
    # A stateful run's checkpoints hold its carry too: every stream's state, shaped as the stack's states.
    like = like._replace(carry=initial_states(like.params, (min(cfg.batch_size, task.train.n),)))
  checkpoints = os.path.join(out, "checkpoints")
  best = os.path.join(checkpoints, "best.json")
  if cfg.restore_best and os.path.exists(best):
    # The params that model selection chose, which the run's test figures are of.
    with open(best) as f:
      step = json.load(f)["record"]["step"]
    return cfg, task, Checkpointer(os.path.join(checkpoints, "best")).restore(like.params, step=step), step
  state = Checkpointer(checkpoints).restore(like)
  return cfg, task, state.params, int(state.step)


def eval_run(out: str) -> dict[str, Any]:
  """Evaluates a run's selected params (see :func:`load_run`) on its task's test split.

  Returns:
    ``{"step", **metrics, "baselines"}``, with the metrics of :func:`jaxlstm.evaluate` and the task's
    baselines to compare them with.

  Example:
    >>> import tempfile
    >>> from jaxlstm.experiment import RunConfig, eval_run, train_run
    >>> cfg = RunConfig(task="adding", task_options={"T": 5, "n_train": 8, "n_val": 4, "n_test": 4}, hidden=4,
    ...                 batch_size=4, steps=2, eval_every=2)
    >>> with tempfile.TemporaryDirectory() as out:
    ...   _ = train_run(cfg, out, progress=False)
    ...   result = eval_run(out)
    >>> result["step"], sorted(result)
    (2, ['baselines', 'loss', 'mse', 'rmse', 'step'])
  """
  cfg, task, params, step = load_run(out)
  return {"step": step, **derived_metrics(task, test_metrics(task, cfg, params)), "baselines": task.baselines}


def sample_run(out: str, prompt: str = "", *, length: int = 200, temperature: float = 1.0, seed: int = 0) -> str:
  """Samples text from a trained character-level language model run: :func:`jaxlstm.sample.sample_text`.

  Raises:
    ValueError: the run's task is not a language model.

  Example:
    >>> import tempfile
    >>> from jaxlstm.experiment import RunConfig, sample_run, train_run
    >>> cfg = RunConfig(task="text", task_options={"T": 8, "max_chars": 2000}, hidden=4, batch_size=4, steps=2,
    ...                 eval_every=2)
    >>> with tempfile.TemporaryDirectory() as out:
    ...   _ = train_run(cfg, out, progress=False)
    ...   text = sample_run(out, "Th", length=5)
    >>> text[:2], len(text)
    ('Th', 7)
  """
  from jaxlstm.sample import sample_text

  cfg, task, params, _ = load_run(out)
  if task.kind != "lm":
    raise ValueError(f"sample needs a language-model task such as 'text'; the run in {out} is {cfg.task!r}")
  return sample_text(
    params,
    task.info["vocab"],
    prompt,
    length=length,
    temperature=temperature,
    seed=seed,
    compute_dtype=DTYPES[cfg.dtype],
  )
