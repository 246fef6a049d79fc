"""The ``jaxlstm`` command (also ``python -m jaxlstm``): a thin shell over the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _demo(args: argparse.Namespace) -> int:
  import jax
  import jax.numpy as jnp
  import optax

  import jaxlstm

  key_p, key_x, key_d = jax.random.split(jax.random.key(args.seed), 3)
  params = jaxlstm.stack_init(key_p, args.input_size, args.hidden, args.layers, peephole=args.peephole)
  xs = jax.random.normal(key_x, (args.batch, args.steps, args.input_size))
  lengths = jnp.maximum(args.steps - jnp.arange(args.batch), 1)

  def loss_fn(params):
    states, hs = jaxlstm.stack(params, xs, lengths=lengths, dropout=0.1, key=key_d)
    return jnp.mean(states[-1].h ** 2) + jnp.mean(hs**2)

  t0 = time.perf_counter()
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
  jax.block_until_ready(grads)
  dt = time.perf_counter() - t0
  states, hs = jaxlstm.stack(params, xs, lengths=lengths)
  print(f"stacked LSTM: {args.layers} layers, hidden {args.hidden}, peephole={args.peephole}")
  print(f"xs {tuple(xs.shape)} -> hs {tuple(hs.shape)}; final h per layer {[tuple(s.h.shape) for s in states]}")
  print(
    f"loss {float(loss):.6f}, gradient global norm {float(optax.tree.norm(grads)):.6f} "
    f"(compiled and run in {dt:.2f} s on {jax.devices()[0].platform})"
  )
  return 0


def _parse_options(pairs: list[str]) -> dict:
  """``KEY=VALUE`` task options; values are read as JSON when they parse, else kept as strings."""
  out = {}
  for pair in pairs:
    if "=" not in pair:
      raise ValueError(f"--option must be KEY=VALUE; got {pair!r}")
    k, v = pair.split("=", 1)
    try:
      out[k] = json.loads(v)
    except json.JSONDecodeError:
      out[k] = v
  return out


# Run flags whose destination is a RunConfig field of the same name.
_FIELD_FLAGS = (
  "hidden",
  "layers",
  "bidirectional",
  "forget_bias",
  "dropout",
  "input_dropout",
  "recurrent_dropout",
  "zoneout",
  "weight_drop",
  "optimizer",
  "lr",
  "schedule",
  "warmup",
  "weight_decay",
  "batch_size",
  "steps",
  "eval_every",
  "save_every",
  "keep",
  "early_stopping",
  "restore_best",
  "seed",
  "dtype",
  "learn_initial_state",
  "stateful",
)


def _config(args: argparse.Namespace):
  """The run's RunConfig: the task's preset, overridden by every flag given (flags left out are None)."""
  from jaxlstm.presets import resolve

  opts = _parse_options(args.option)
  for flag, key in (
    ("seq_len", "T"),
    ("text", "path"),
    ("n_train", "n_train"),
    ("n_val", "n_val"),
    ("n_test", "n_test"),
  ):
    if getattr(args, flag, None) is not None:
      opts[key] = getattr(args, flag)
  overrides = {name: getattr(args, name) for name in _FIELD_FLAGS if getattr(args, name, None) is not None}
  if args.cell is not None:
    overrides["cell"], overrides["activation"] = ("rnn", "relu") if args.cell == "rnn-relu" else (args.cell, "tanh")
  if args.clip_norm is not None:
    overrides["clip_norm"] = args.clip_norm if args.clip_norm > 0 else None
  if opts:
    overrides["task_options"] = opts
  return resolve(args.task, **overrides)


def _summary_line(record: dict) -> str:
  skip = {"step", "baselines", "epoch", "steps_per_s", "grad_norm"}  # the caller prints the step first
  parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items() if k not in skip]
  return ", ".join(parts)


def _train(args: argparse.Namespace) -> int:
  import dataclasses

  from jaxlstm import distributed
  from jaxlstm.experiment import headline, load_task, read_config, train_run

  cfg = _config(args)
  if args.resume:
    _check_resume_flags(args, cfg)
  if args.show_config:
    shown = read_config(args.out) if args.resume else cfg
    print(json.dumps(dataclasses.asdict(shown), indent=2))
    return 0
  # Before anything touches a device, as jax.distributed requires.
  multi = distributed.maybe_initialize(args.coordinator, args.num_processes, args.process_id)
  progress = False if args.quiet else None
  train_run(
    cfg,
    args.out,
    resume=args.resume,
    overwrite=args.overwrite,
    progress=progress,
    devices=args.devices or ("all" if multi else None),
  )
  with open(os.path.join(args.out, "summary.json")) as f:
    summary = json.load(f)
  task = load_task(read_config(args.out))
  how = "best on validation" if summary["selected_by"] != "last step" else "the last step"
  print(f"{headline(task, summary['test'])} at step {summary['selected_step']} ({how})")
  print(f"run written to {args.out} (config.json, metrics.jsonl, summary.json, checkpoints/)")
  return 0


# Flags that shape the run only through task_options, and the flags that set cell and activation together.
_TASK_FLAGS = ("seq_len", "n_train", "n_val", "n_test", "text", "option")
# Flags about how this process runs, which a resumed run may change freely; --steps may extend the run.
_FREE_FLAGS = (
  "out",
  "resume",
  "overwrite",
  "quiet",
  "devices",
  "coordinator",
  "num_processes",
  "process_id",
  "steps",
  "command",
  "func",
  "show_config",
)


def _explicit_flags(argv: list[str]) -> set[str]:
  """The destinations of the flags that ``argv`` gives, as opposed to those left at their defaults."""
  probe = build_parser()
  actions = list(probe._actions)
  for action in probe._actions:
    if isinstance(action, argparse._SubParsersAction):
      for sub in action.choices.values():
        actions += sub._actions
  for action in actions:
    action.default = argparse.SUPPRESS
  return set(vars(probe.parse_args(argv)))


def _check_resume_flags(args: argparse.Namespace, cfg) -> None:
  """Refuses ``--resume`` with a flag that contradicts the saved run: it would be silently ignored."""
  from jaxlstm.experiment import read_config

  if not os.path.exists(os.path.join(args.out, "config.json")):
    return  # train_run says that there is nothing to resume
  saved = read_config(args.out)
  conflicts = []
  for dest in sorted(_explicit_flags(args.argv) - set(_FREE_FLAGS)):
    if dest in _TASK_FLAGS:
      for key, value in cfg.task_options.items():
        if saved.task_options.get(key) != value:
          conflicts.append(f"task option {key}={value!r} (the run has {saved.task_options.get(key)!r})")
      continue
    fields = ("cell", "activation") if dest == "cell" else (dest,)
    for field in fields:
      if getattr(cfg, field) != getattr(saved, field):
        conflicts.append(
          f"--{dest.replace('_', '-')} gives {field}={getattr(cfg, field)!r} (the run has {getattr(saved, field)!r})"
        )
  if conflicts:
    raise ValueError(
      f"--resume continues the run in {args.out} with its saved config, which these flags "
      f"contradict: {'; '.join(sorted(set(conflicts)))}; drop them, or start a new run"
    )


def _eval(args: argparse.Namespace) -> int:
  from jaxlstm.experiment import eval_run, headline, load_task, read_config

  result = eval_run(args.out)
  if args.json:
    print(json.dumps(result, indent=2))
    return 0
  task = load_task(read_config(args.out))
  print(f"step {result['step']}: " + _summary_line(result))
  print(headline(task, result, prefix=""))
  return 0


def _sample(args: argparse.Namespace) -> int:
  from jaxlstm.experiment import sample_run

  print(sample_run(args.out, args.prompt, length=args.length, temperature=args.temperature, seed=args.seed))
  return 0


def _sweep(args: argparse.Namespace) -> int:
  from jaxlstm import sweep

  cfg = _config(args)
  cfg.validate()
  if args.show_config:
    import dataclasses

    print(json.dumps(dataclasses.asdict(cfg), indent=2))
    return 0
  hidden = _int_list("--hidden-sizes", args.hidden_sizes)
  lrs = _float_list("--lrs", args.lrs)
  seeds = list(range(cfg.seed, cfg.seed + args.seeds))
  rows = sweep.run_sweep(cfg, hidden, lrs, seeds, progress=lambda m: print(m, file=sys.stderr))
  summary = sweep.summarize(rows)
  table = sweep.format_table(summary)
  print(table)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "sweep.json"), "w") as f:
    json.dump({"config": vars(args) | {"func": None}, "rows": rows, "summary": summary}, f, indent=2, default=str)
  with open(os.path.join(args.out, "sweep.md"), "w") as f:
    f.write(table + "\n")
  sweep.plot_sweep(summary, os.path.join(args.out, "sweep.png"), title=f"{cfg.task}: {cfg.cell}, {cfg.steps} steps")
  print(f"sweep written to {args.out} (sweep.json, sweep.md, sweep.png)")
  return 0


def _int_list(flag: str, text: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(",") if v]
  except ValueError:
    raise ValueError(f"{flag} must be comma-separated integers; got {text!r}") from None
  if not values or min(values) < 1:
    raise ValueError(f"{flag} must list positive integers; got {text!r}")
  return values


def _float_list(flag: str, text: str) -> list[float]:
  try:
    values = [float(v) for v in text.split(",") if v]
  except ValueError:
    raise ValueError(f"{flag} must be comma-separated numbers; got {text!r}") from None
  if not values or min(values) <= 0:
    raise ValueError(f"{flag} must list positive numbers; got {text!r}")
  return values


class _Help(argparse.HelpFormatter):
  """``--help`` with each flag's default, where it has one worth showing."""

  def _get_help_string(self, action):
    text = action.help or ""
    if action.option_strings and "%(default)" not in text and action.default not in (None, False, argparse.SUPPRESS):
      text += " (default: %(default)s)"
    return text


class _Parser(argparse.ArgumentParser):
  """Reports a bad command line in one line and exits with status 2."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")


def _add_run_flags(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
  """The flags that define a run. Those that a task's preset may set default to None, "the preset's value"."""
  from jaxlstm.experiment import RunConfig
  from jaxlstm.models import cell_presets
  from jaxlstm.tasks import TASKS

  d = RunConfig()

  def preset(default) -> str:
    return f" (default: the task's preset, else {default})"

  p.add_argument("--task", default="adding", help=f"one of {', '.join(sorted(TASKS))}")
  p.add_argument(
    "--show-config",
    action="store_true",
    help="print the resolved config (the task's preset and the flags given) and exit",
  )
  p.add_argument("--cell", default=None, choices=sorted(cell_presets()), help="recurrent cell" + preset(d.cell))
  if not sweep:
    p.add_argument("--hidden", type=_positive_int, default=None, help="hidden units per layer" + preset(d.hidden))
  p.add_argument("--layers", type=_positive_int, default=None, help="stacked recurrent layers" + preset(d.layers))
  p.add_argument(
    "--bidirectional",
    action=argparse.BooleanOptionalAction,
    default=None,
    help="both directions, concatenated" + preset(d.bidirectional),
  )
  p.add_argument(
    "--forget-bias", type=float, default=None, help="initial LSTM forget-gate bias" + preset(d.forget_bias)
  )
  p.add_argument("--dropout", type=float, default=None, help="between recurrent layers" + preset(d.dropout))
  p.add_argument(
    "--input-dropout",
    type=float,
    default=None,
    help="variational dropout on each layer's input, one mask per sequence" + preset(d.input_dropout),
  )
  p.add_argument(
    "--recurrent-dropout",
    type=float,
    default=None,
    help="variational dropout on h in each gate's recurrent projection" + preset(d.recurrent_dropout),
  )
  p.add_argument(
    "--zoneout",
    type=float,
    default=None,
    help="probability that a state unit keeps its value at a step" + preset(d.zoneout),
  )
  p.add_argument(
    "--weight-drop", type=float, default=None, help="DropConnect on the recurrent weights w_h" + preset(d.weight_drop)
  )
  p.add_argument(
    "--optimizer",
    default=None,
    choices=["adam", "adamw", "rmsprop", "sgd"],
    help="optax optimizer" + preset(d.optimizer),
  )
  if not sweep:
    p.add_argument("--lr", type=float, default=None, help="peak learning rate" + preset(d.lr))
  p.add_argument(
    "--schedule", default=None, choices=["constant", "cosine"], help="learning-rate schedule" + preset(d.schedule)
  )
  p.add_argument("--warmup", type=int, default=None, help="linear warmup steps" + preset(d.warmup))
  p.add_argument(
    "--weight-decay",
    type=float,
    default=None,
    help="decoupled weight decay, for --optimizer adamw" + preset("adamw's own, 1e-4"),
  )
  p.add_argument(
    "--clip-norm", type=float, default=None, help="clip gradients to this global norm, 0 for none" + preset(d.clip_norm)
  )
  p.add_argument("--batch-size", type=_positive_int, default=None, help="examples per step" + preset(d.batch_size))
  p.add_argument("--steps", type=_positive_int, default=None, help="training steps" + preset(d.steps))
  p.add_argument(
    "--eval-every", type=_positive_int, default=None, help="steps between validation evaluations" + preset(d.eval_every)
  )
  p.add_argument(
    "--save-every",
    type=_positive_int,
    default=None,
    help="checkpoint interval (default: the task's preset, else eval-every)",
  )
  p.add_argument("--keep", type=_positive_int, default=None, help="checkpoints to keep" + preset(d.keep))
  p.add_argument(
    "--early-stopping",
    type=_positive_int,
    default=None,
    help="patience, in validation evaluations (default: the task's preset, else none)",
  )
  p.add_argument(
    "--restore-best",
    action=argparse.BooleanOptionalAction,
    default=None,
    help="end with the params of the best validation evaluation, not the last" + preset(d.restore_best),
  )
  p.add_argument("--seed", type=int, default=None, help="seeds the init, the data and the batch order" + preset(d.seed))
  p.add_argument(
    "--dtype",
    default=None,
    choices=["float32", "bfloat16"],
    help="compute dtype; the state and master params stay float32" + preset(d.dtype),
  )
  p.add_argument(
    "--learn-initial-state",
    action=argparse.BooleanOptionalAction,
    default=None,
    help="train the initial state of every layer, as params" + preset(d.learn_initial_state),
  )
  p.add_argument(
    "--stateful",
    action=argparse.BooleanOptionalAction,
    default=None,
    help="text tasks: truncated backpropagation through time, each batch row's state carried to "
    "its next window, and evaluation of each split as one stream" + preset(d.stateful),
  )
  p.add_argument(
    "--seq-len", type=_positive_int, default=None, help="sequence length T of the task (default: the task's)"
  )
  p.add_argument("--n-train", type=_positive_int, default=None, help="training examples (default: the task's)")
  p.add_argument("--n-val", type=_positive_int, default=None, help="validation examples (default: the task's)")
  p.add_argument("--n-test", type=_positive_int, default=None, help="test examples (default: the task's)")
  p.add_argument("--text", default=None, help="text file for --task text (default: Python's bundled docs)")
  p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="other task options")
  p.add_argument("--out", required=True, help="run directory")
  p.add_argument("--quiet", action="store_true", help="no progress output")


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
  return value


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="jaxlstm", description="Recurrent networks in JAX.")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

  train = sub.add_parser("train", formatter_class=_Help, help="train a model on a task")
  _add_run_flags(train)
  train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
  train.add_argument(
    "--overwrite", action="store_true", help="replace the run already in --out (its config, metrics and checkpoints)"
  )
  train.add_argument("--devices", default=None, help="data-parallel over 'all' devices or the first N")
  train.add_argument(
    "--coordinator", default=None, help="multi-host: coordinator HOST:PORT (or JAX_COORDINATOR_ADDRESS)"
  )
  train.add_argument("--num-processes", type=_positive_int, default=None, help="multi-host: process count")
  train.add_argument("--process-id", type=int, default=None, help="multi-host: this process's index")
  train.set_defaults(func=_train)

  ev = sub.add_parser("eval", formatter_class=_Help, help="evaluate a run's latest checkpoint on its test split")
  ev.add_argument("--out", required=True, help="run directory")
  ev.add_argument("--json", action="store_true", help="print the result as JSON")
  ev.set_defaults(func=_eval)

  sample = sub.add_parser("sample", formatter_class=_Help, help="sample text from a trained 'text' run")
  sample.add_argument("--out", required=True, help="run directory")
  sample.add_argument("--prompt", default="", help="text to continue")
  sample.add_argument("--length", type=_positive_int, default=300, help="characters to generate")
  sample.add_argument("--temperature", type=float, default=0.8, help="softmax temperature")
  sample.add_argument("--seed", type=int, default=0, help="sampling seed")
  sample.set_defaults(func=_sample)

  sweep = sub.add_parser(
    "sweep", formatter_class=_Help, help="train a vmapped ensemble over seeds and learning rates per hidden size"
  )
  _add_run_flags(sweep, sweep=True)
  sweep.add_argument("--hidden-sizes", default="16,32,64,128", help="comma-separated hidden sizes")
  sweep.add_argument("--lrs", default="3e-4,1e-3,3e-3", help="comma-separated learning rates")
  sweep.add_argument("--seeds", type=_positive_int, default=3, help="seeds per (hidden, lr)")
  sweep.set_defaults(func=_sweep)

  demo = sub.add_parser("demo", formatter_class=_Help, help="run a stacked LSTM forward and backward and print shapes")
  demo.add_argument("--batch", type=_positive_int, default=4, help="batch size")
  demo.add_argument("--steps", type=_positive_int, default=20, help="sequence length T")
  demo.add_argument("--input-size", type=_positive_int, default=8, help="input features")
  demo.add_argument("--hidden", type=_positive_int, default=32, help="hidden units per layer")
  demo.add_argument("--layers", type=_positive_int, default=2, help="stacked layers")
  demo.add_argument("--peephole", action="store_true", help="peephole LSTMs")
  demo.add_argument("--seed", type=int, default=0, help="PRNG seed")
  demo.set_defaults(func=_demo)
  return parser


def main(argv: list[str] | None = None) -> int:
  from jaxlstm._src.extras import MissingExtra
  from jaxlstm.checkpoint import CheckpointError

  parser = build_parser()
  args = parser.parse_args(argv)
  args.argv = sys.argv[1:] if argv is None else list(argv)  # which flags were given, for --resume's check
  try:
    return args.func(args)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    # Bad input from the command line: one line, no traceback.
    print(f"jaxlstm {args.command}: error: {e}", file=sys.stderr)
    return 2
  except (CheckpointError, MissingExtra) as e:
    print(f"jaxlstm {args.command}: error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    saved = None
    if args.command == "train" and os.path.isdir(os.path.join(args.out, "checkpoints")):
      from jaxlstm.checkpoint import Checkpointer

      saved = Checkpointer(os.path.join(args.out, "checkpoints")).latest_step()
    where = "" if saved is None else f" at step {saved}, which is saved"
    print(f"interrupted{where}; continue with --resume", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
