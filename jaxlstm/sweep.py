"""Many models in one program: a vmapped ensemble over seeds and learning rates.

For each hidden size, every (learning rate, seed) pair is one member of an
ensemble whose params carry a leading member axis. One jitted, vmapped step
trains all members on the same batch; the learning rate is a per-member
hyperparameter inside the optimizer state (``optax.inject_hyperparams``).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlstm._src.extras import require
from jaxlstm.experiment import RunConfig, derived_metrics, load_task, make_loss, monitor, split_batch
from jaxlstm.models import model_init
from jaxlstm.optim import OPTIMIZERS, make_schedule
from jaxlstm.train import batch_indices, take


def _ensemble_optimizer(cfg: RunConfig) -> optax.GradientTransformation:
  """``cfg``'s optimizer with a per-member peak learning rate.

  The schedule's shape (warmup, cosine) scales the updates after the
  optimizer, which equals scaling the learning rate: every optimizer here,
  adamw's decay included, multiplies its whole update by the learning rate.
  """
  extra = {} if cfg.weight_decay is None else {"weight_decay": cfg.weight_decay}
  opt = optax.inject_hyperparams(OPTIMIZERS[cfg.optimizer])(learning_rate=cfg.lr, **extra)
  shape = make_schedule(1.0, schedule=cfg.schedule, warmup_steps=cfg.warmup, total_steps=cfg.steps)
  parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm is not None else []
  return optax.chain(*parts, opt, optax.scale_by_schedule(shape))


def _set_lr(opt_state, lrs: jax.Array):
  """Writes per-member learning rates ``(M,)`` into an ensemble's optimizer state."""

  def injected(s):  # optax's inject_hyperparams states (their class names vary across versions)
    return isinstance(getattr(s, "hyperparams", None), dict) and "learning_rate" in s.hyperparams

  def fix(s):
    if injected(s):
      return s._replace(hyperparams={**s.hyperparams, "learning_rate": lrs.astype(jnp.float32)})
    return s

  found = []
  jax.tree_util.tree_map(lambda s: found.append(injected(s)), opt_state, is_leaf=injected)
  if not any(found):
    raise RuntimeError("the ensemble optimizer state holds no injected learning rate")
  return jax.tree_util.tree_map(fix, opt_state, is_leaf=injected)


def train_ensemble(task, cfg: RunConfig, lrs: Sequence[float], seeds: Sequence[int]) -> list[dict]:
  """Trains ``len(lrs) * len(seeds)`` models of one hidden size at once.

  Members are compared on the validation split, as model selection must
  be: the test split is left for the chosen configuration's own runs. Each
  member is evaluated every ``cfg.eval_every`` steps and at the end; with
  ``cfg.restore_best`` its row holds its best evaluation (by the task's
  validation monitor), as a single run would select it, else its last.
  Early stopping does not apply: every member trains all ``cfg.steps``.

  Returns:
    One dict per member: ``hidden``, ``lr``, ``seed`` and its ``val_`` metrics.

  Raises:
    ValueError: ``cfg.stateful``: the ensemble trains on shuffled windows, without carrying the state.
  """
  if cfg.stateful:
    raise ValueError(
      "sweep trains stateless models (shuffled windows, no carried state), but the config has "
      "stateful=True; pass --no-stateful to sweep it stateless"
    )
  members = list(itertools.product(lrs, seeds))
  loss_fn = make_loss(task, cfg, train=True)
  eval_fn = make_loss(task, cfg, train=False)
  opt = _ensemble_optimizer(cfg)

  keys = jnp.stack([jax.random.key(s) for _, s in members])
  params = jax.vmap(
    lambda k: model_init(
      k,
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
  )(keys)
  opt_state = _set_lr(jax.vmap(opt.init)(params), jnp.asarray([lr for lr, _ in members]))

  def one_step(p, s, batch, key):
    loss, grads = jax.value_and_grad(lambda q: loss_fn(q, batch, key)[0])(p)
    updates, s = opt.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  step = jax.jit(jax.vmap(one_step, in_axes=(0, 0, None, 0)))
  evaluate = jax.jit(jax.vmap(lambda p, batch: eval_fn(p, batch, jax.random.key(0)), in_axes=(0, None)))
  val = split_batch(task.val)
  n_val = len(task.val.xs)

  def validate() -> dict[str, np.ndarray]:
    totals: dict[str, np.ndarray] = {}
    for start in range(0, n_val, 256):
      idx = np.arange(start, min(start + 256, n_val))
      loss, metrics = evaluate(params, take(val, idx))
      for name, value in {"loss": loss, **metrics}.items():
        totals[name] = totals.get(name, 0.0) + np.asarray(value, np.float64) * len(idx)
    return {f"val_{k}": v / n_val for k, v in totals.items()}  # (M,) each

  watch, sign = monitor(task), (-1.0 if task.mode == "max" else 1.0)
  chosen: dict[str, np.ndarray] | None = None
  chosen_step = np.zeros(len(members), np.int64)
  data = split_batch(task.train)
  n = len(task.train.xs)
  bs = min(cfg.batch_size, n)
  key = jax.random.key(cfg.seed)
  for i in range(cfg.steps):
    key, sub = jax.random.split(key)
    batch = take(data, batch_indices(n, bs, i, cfg.seed))
    params, opt_state, _ = step(params, opt_state, batch, jax.random.split(sub, len(members)))
    done = i + 1
    if done % cfg.eval_every and done != cfg.steps:
      continue
    now = validate()
    # Each member keeps its best evaluation (strictly better only, as fit does), or its last without restore_best.
    better = (
      np.ones(len(members), bool)
      if chosen is None or not cfg.restore_best
      else sign * now[watch] < sign * chosen[watch]
    )
    chosen = now if chosen is None else {k: np.where(better, now[k], chosen[k]) for k in now}
    chosen_step = np.where(better, done, chosen_step)
  assert chosen is not None  # the last step evaluates; none runs only for steps=0, which RunConfig.validate refuses
  rows = []
  for m, (lr, seed) in enumerate(members):
    metrics = {k: float(v[m]) for k, v in chosen.items()}
    rows.append(
      {
        "hidden": cfg.hidden,
        "lr": lr,
        "seed": seed,
        "step": int(chosen_step[m]),
        **derived_metrics(task, metrics, "val_"),
      }
    )
  return rows


def run_sweep(
  cfg: RunConfig, hidden_sizes: Sequence[int], lrs: Sequence[float], seeds: Sequence[int], progress=print
) -> list[dict]:
  """Loops over hidden sizes; each trains a vmapped ensemble over ``lrs`` × ``seeds``."""
  task = load_task(cfg)
  rows = []
  for h in hidden_sizes:
    t0 = time.perf_counter()
    rows += train_ensemble(task, dataclasses.replace(cfg, hidden=h), lrs, seeds)
    progress(f"hidden {h}: {len(lrs) * len(seeds)} models trained together in {time.perf_counter() - t0:.1f} s")
  return rows


def headline_metric(rows: list[dict]) -> tuple[str, str]:
  """The metric to compare and whether higher is better."""
  keys = rows[0].keys()
  for name, mode in (
    ("val_accuracy", "max"),
    ("val_rmse", "min"),
    ("val_bits_per_char", "min"),
    ("val_mse", "min"),
    ("val_loss", "min"),
  ):
    if name in keys:
      return name, mode
  return "val_loss", "min"


def summarize(rows: list[dict]) -> list[dict]:
  """Mean and standard deviation over seeds for each (hidden, lr)."""
  metric, _ = headline_metric(rows)
  groups: dict[tuple, list[float]] = {}
  for r in rows:
    groups.setdefault((r["hidden"], r["lr"]), []).append(r[metric])
  return [
    {"hidden": h, "lr": lr, "metric": metric, "mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": len(v)}
    for (h, lr), v in sorted(groups.items())
  ]


def format_table(summary: list[dict]) -> str:
  metric = summary[0]["metric"]
  lines = [f"| hidden | lr | {metric} (mean ± std over seeds) |", "|---:|---:|---|"]
  for s in summary:
    lines.append(f"| {s['hidden']} | {s['lr']:g} | {s['mean']:.4f} ± {s['std']:.4f} (n={s['seeds']}) |")
  return "\n".join(lines)


def plot_sweep(summary: list[dict], path: str, title: str = "") -> None:
  """Test metric against hidden size, one line per learning rate, seeds as error bars."""
  # A bare Figure renders without pyplot, so it leaves the caller's backend
  # (for example Jupyter's inline one) alone.
  Figure = require("matplotlib.figure", extra="tasks", needed_by="the sweep's plot").Figure
  fig = Figure(figsize=(6, 4))
  ax = fig.subplots()
  for lr in sorted({s["lr"] for s in summary}):
    pts = [s for s in summary if s["lr"] == lr]
    ax.errorbar(
      [s["hidden"] for s in pts],
      [s["mean"] for s in pts],
      yerr=[s["std"] for s in pts],
      marker="o",
      capsize=3,
      label=f"lr = {lr:g}",
    )
  ax.set_xscale("log", base=2)
  ax.set_xlabel("hidden units per layer")
  ax.set_ylabel(summary[0]["metric"].replace("_", " "))
  ax.set_title(title)
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
