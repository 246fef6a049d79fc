"""Side-by-side LSTM and GRU benchmark: jaxlstm (fused, reference, Pallas, cuDNN) against Flax, Keras 3, cuDNN, PyTorch.

  python bench/bench.py                          # full run: train S, M, L; inference S, M
  python bench/bench.py --quick                  # tiny smoke run: 1-2 minutes, mostly imports and compiles
  python bench/bench.py --configs S,M --infer-configs S --steps 20 --rounds 3
  python bench/bench.py --steps S=10,M=4,L=2 --rounds S=2,M=2,L=1 --warmup 0   # on a busy machine
  python bench/bench.py --peers jaxlstm-fused,torch --out /tmp/results.md
  python bench/bench.py --render bench/results.json   # rewrite results.md from a saved run
  python bench/bench.py --device gpu --out bench/results_gpu.md   # on a CUDA GPU, with the cuDNN peers
  python bench/bench.py --device gpu --precision tf32 --configs S --infer-configs S   # TF32 on every side
  python bench/bench.py --cell gru --peers jaxlstm,jaxlstm-ref,torch   # GRU layers on every side
  python bench/bench.py --cell proj --peers jaxlstm,jaxlstm-ref,torch  # LSTMs projected to H // 2 (proj_size)
  python bench/bench.py --cell layernorm --peers jaxlstm,jaxlstm-ref   # LayerNorm LSTMs: jaxlstm's kernels

Every peer (``peers.py``) trains the same model, on the shapes of
``configs.py``: a stack of LSTM layers, a Dense(10) head on the last time
step's output, softmax cross-entropy, Adam. A timed training step is forward +
backward + optimizer update; an inference step is the forward pass alone.

Each measurement runs in its own subprocess (``harness.py``). The peers run
one after another, in an order rotated every round, for ``--rounds`` rounds
per config; the ``--steps`` timed steps of all rounds are pooled into a median
and an interquartile range. The first step of each round (tracing and
compilation for the JAX peers) is reported separately, and further
``--warmup`` steps are dropped. A jitted 2048 x 2048 float32 matmul, measured
in every round, gives the machine's GEMM ceiling; each peer's achieved
GFLOP/s is reported as a fraction of it.

The report (``report.py``) goes to ``--out`` (Markdown) with the raw numbers
beside it (``.json``); after each config the run so far is saved to
``.partial.json``, which ``--render`` turns into a report if the run is cut short.

This file is the command line and the driver's main loop.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

from configs import (
  CELLS,
  CONFIGS,
  DEFAULT_ROUNDS,
  DEFAULT_STEPS,
  GPU_ROUNDS,
  GPU_STEPS,
  param_count,
)
from harness import run_rounds, worker_main
from peers import ALL_PEERS, DEFAULT_GPU_PEERS, DEFAULT_PEERS
from report import machine_lines, write_report


def parse_args(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__.split("\n", 1)[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument(
    "--device",
    choices=["cpu", "gpu"],
    default="cpu",
    help="cpu (default), or gpu: JAX on CUDA, PyTorch on CUDA, cuDNN and Pallas peers, more steps, configs XL, DB",
  )
  p.add_argument(
    "--precision",
    choices=["native", "highest", "tf32", "bf16"],
    default=None,
    help="one precision for every peer (see peers.py): highest (full float32), tf32, bf16, or native (each "
    "framework's own default, which mixes precisions on a GPU); default: highest on GPU, native on CPU",
  )
  p.add_argument(
    "--cell",
    choices=CELLS,
    default="lstm",
    help="the layers every peer stacks: lstm (default); gru (PyTorch's semantics on every side); layernorm, "
    "the LayerNorm LSTM (jaxlstm only); proj, the LSTM projected to H // 2 (PyTorch's proj_size)",
  )
  p.add_argument(
    "--configs",
    default=None,
    help="training configs, from S, M, L, XL, DB (default S,M,L; GPU S,M,L,XL,DB); '' for none",
  )
  p.add_argument("--infer-configs", default=None, help="inference configs (default S,M; GPU S,M,L,XL,DB); '' for none")
  p.add_argument(
    "--peers",
    default=None,
    help=f"comma list from {', '.join(ALL_PEERS)} (default "
    f"{','.join(DEFAULT_PEERS)}; GPU {','.join(DEFAULT_GPU_PEERS)})",
  )
  p.add_argument(
    "--steps",
    default="",
    help="timed steps per peer, pooled over the rounds: N for every config "
    "or per config, e.g. S=20,L=6 (default " + per_config_text(DEFAULT_STEPS) + ")",
  )
  p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first, in each round")
  p.add_argument(
    "--rounds",
    default="",
    help="rounds of the whole peer list: N, or per config as for "
    "--steps (default " + per_config_text(DEFAULT_ROUNDS) + ")",
  )
  p.add_argument("--timeout", type=float, default=900, help="seconds before a worker is killed")
  p.add_argument(
    "--torch-denormals",
    action="store_true",
    help="leave PyTorch's denormal handling alone (by default it flushes them to zero, as XLA does)",
  )
  p.add_argument(
    "--out",
    default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md"),
    help="Markdown report (default bench/results.md)",
  )
  p.add_argument("--quick", action="store_true", help="tiny shapes, 2 timed steps, 1 round: a smoke run")
  p.add_argument("--render", metavar="JSON", help="rewrite the report of a saved run (its .json) to --out")
  p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  gpu = args.device == "gpu"
  if args.configs is None:
    args.configs = "S,M,L,XL,DB" if gpu else "S,M,L"
  if args.infer_configs is None:
    args.infer_configs = "S,M,L,XL,DB" if gpu else "S,M"
  if args.precision is None:
    # On a GPU the frameworks' own defaults differ (TF32 or not): the headline compares at one precision.
    args.precision = "highest" if gpu else "native"
  if args.peers is None:
    args.peers = ",".join(DEFAULT_GPU_PEERS if gpu else DEFAULT_PEERS)
  if args.quick:
    args.configs, args.infer_configs = "Q", "Q"
    args.warmup = 0
  args.steps = per_config(args.steps, GPU_STEPS if gpu else DEFAULT_STEPS)
  args.rounds = per_config(args.rounds, GPU_ROUNDS if gpu else DEFAULT_ROUNDS)
  return args


def per_config_text(table: dict) -> str:
  return ",".join(f"{k}={v}" for k, v in table.items() if k != "Q")


def per_config(text: str, defaults: dict) -> dict:
  """Parses ``N`` (every config) or ``S=20,L=6`` (those configs) over ``defaults``."""
  out = dict(defaults)
  text = text.strip()
  if text.isdigit():
    return {k: int(text) for k in out}
  for item in filter(None, (t.strip() for t in text.split(","))):
    name, _, value = item.partition("=")
    if name not in CONFIGS or not value.isdigit() or int(value) < 1:
      raise SystemExit(f"expected N or CONFIG=N,...; got {text!r}")
    out[name] = int(value)
  return out


def split_list(text: str, allowed) -> list:
  items = [s.strip() for s in text.split(",") if s.strip()]
  bad = [s for s in items if s not in allowed]
  if bad:
    raise SystemExit(f"unknown {bad}; choose from {sorted(allowed)}")
  return items


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.worker:
    return worker_main(args.worker)
  if args.out and os.path.dirname(args.out):  # a new folder for the report, before an hour of timing
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
  if args.render:
    with open(args.render) as f:
      return write_report(json.load(f), args.out)
  started = time.perf_counter()
  command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])
  peers = split_list(args.peers, ALL_PEERS)
  train, infer = split_list(args.configs, CONFIGS), split_list(args.infer_configs, CONFIGS)
  # One job per config; a peer's worker runs its training and inference measurements in turn.
  jobs = [(c, [m for m, cs in (("train", train), ("infer", infer)) if c in cs]) for c in CONFIGS if c in train + infer]
  header = machine_lines(args.device) + [f"- matmul precision, every peer: {args.precision}", f"- cell: {args.cell}"]
  print("\n".join(header), flush=True)
  log = lambda msg: print(msg, flush=True)
  results = []
  for name, modes in jobs:
    cfg = CONFIGS[name]
    log(f"{name} ({'+'.join(modes)}): {cfg} — {param_count(cfg, args.cell):,d} params")
    results.append(
      {
        "name": name,
        "config": list(cfg),
        "modes": modes,
        "peers": peers,
        "rounds": args.rounds[name],
        "pooled": run_rounds(name, cfg, modes, peers, args, log),
      }
    )
    run = {
      "header": header,
      "command": command,
      "device": args.device,
      "wall_min": (time.perf_counter() - started) / 60,
      "load_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
      "warmup": args.warmup,
      "torch_denormals": args.torch_denormals,
      "precision": args.precision,
      "cell": args.cell,
      "jobs": results,
    }
    if args.out:  # the configs so far, in case the run is cut short (render it with --render)
      with open(os.path.splitext(args.out)[0] + ".partial.json", "w") as f:
        json.dump(run, f)
  write_report(run, args.out)
  if args.out and os.path.exists(os.path.splitext(args.out)[0] + ".partial.json"):
    os.remove(os.path.splitext(args.out)[0] + ".partial.json")


if __name__ == "__main__":
  main()
