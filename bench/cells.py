"""Training-step time of every cell at one shape, on the kernel ``impl="auto"`` picks, and of the regularizers.

One jitted forward and backward pass (``jax.value_and_grad`` of a per-step MSE through one layer and a
dense readout) per variant, timed as the median of ``--steps`` calls after a warm-up; the variants are
called in turn, round after round, so that a change of load on a shared machine hits all alike. The
table gives each variant's time relative to the plain LSTM of the same run, which is what to compare:
absolute times on a shared machine move from run to run.

  python bench/cells.py                                  # B=32, T=100, I=32, H=128 (the S shape)
  python bench/cells.py --B 8 --T 1000 --out /tmp/cells.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxlstm

# name: (stack_init options, layer options)
VARIANTS = {
  "lstm": ({"cell": "lstm"}, {}),
  "lstm, peephole": ({"cell": "lstm", "peephole": True}, {}),
  "lstm, layer_norm": ({"cell": "lstm", "layer_norm": True}, {}),
  "lstm, proj_size=H/2": ({"cell": "lstm", "proj_size": "H/2"}, {}),
  "gru": ({"cell": "gru"}, {}),
  "rnn": ({"cell": "rnn"}, {}),
  "mingru": ({"cell": "mingru"}, {}),
  "minlstm": ({"cell": "minlstm"}, {}),
  "slstm, 4 heads": ({"cell": "slstm", "num_heads": 4}, {}),
  "lstm + input_dropout, weight_drop": ({"cell": "lstm"}, {"input_dropout": 0.25, "weight_drop": 0.25}),
  "lstm + recurrent_dropout": ({"cell": "lstm"}, {"recurrent_dropout": 0.25}),
  "lstm + zoneout": ({"cell": "lstm"}, {"zoneout": {"h": 0.05, "c": 0.5}}),
}


def make_step(name, B, T, I, H):
  init_options, call_options = VARIANTS[name]
  init_options = dict(init_options)
  if init_options.get("proj_size") == "H/2":
    init_options["proj_size"] = H // 2
  params = jaxlstm.stack_init(jax.random.key(0), I, H, 1, **init_options)
  out = params[0].output_size
  head = jnp.zeros((out, 1), jnp.float32)
  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.standard_normal((B, T, I)), jnp.float32)
  ys = jnp.asarray(rng.standard_normal((B, T, 1)), jnp.float32)
  key = jax.random.key(1)

  def loss(p, xs, ys):
    _, hs = jaxlstm.stack(p, xs, key=key if call_options else None, **call_options)
    return jnp.mean((hs @ head - ys) ** 2)

  step = jax.jit(jax.value_and_grad(loss))
  kernel = jaxlstm.explain(params, xs, **call_options)[0].kernel
  return (lambda: jax.block_until_ready(step(params, xs, ys))), kernel


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--B", type=int, default=32)
  parser.add_argument("--T", type=int, default=100)
  parser.add_argument("--I", type=int, default=32)
  parser.add_argument("--H", type=int, default=128)
  parser.add_argument("--steps", type=int, default=15, help="timed calls of each variant")
  parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results_cells.md"))
  args = parser.parse_args(argv)
  steps, kernels = {}, {}
  for name in args.variants:
    steps[name], kernels[name] = make_step(name, args.B, args.T, args.I, args.H)
    steps[name]()  # compile
    steps[name]()
  times = {name: [] for name in steps}
  for _ in range(args.steps):
    for name, fn in steps.items():
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  med = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
  base = med.get("lstm")
  load = os.getloadavg()[0]
  lines = [
    "# Every cell at one shape: training-step time",
    "",
    "One jitted forward and backward pass through one layer and a dense readout, median of "
    f"{args.steps} calls after 2 warm-up calls, the variants called in turn. Compare the ratios; the "
    "machine is shared and absolute times move between runs. One run.",
    "",
    "```",
    "python bench/cells.py",
    "```",
    "",
    "| variant | kernel | ms | / lstm |",
    "|---|---|---:|---:|",
  ]
  for name in steps:
    ratio = f"{med[name] / base:.2f}" if base else "-"
    lines.append(f"| {name} | {kernels[name]} | {med[name]:.1f} | {ratio} |")
  lines += [
    "",
    f"B={args.B}, T={args.T}, I={args.I}, H={args.H}, float32; jax {jax.__version__} on "
    f"{jax.default_backend()} ({platform.machine()}, {os.cpu_count()} cores, 1-minute load {load:.2f} at the "
    "end).",
  ]
  text = "\n".join(lines) + "\n"
  with open(args.out, "w") as f:
    f.write(text)
  print(text)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
