"""Training-step time against sequence length: minGRU and minLSTM on the parallel kernel, the fused LSTM.

One jitted forward and backward pass (``jax.value_and_grad`` of a per-step MSE through one layer and a
dense readout) per implementation, timed as the median of ``--steps`` calls after a warm-up, the
implementations called in turn so that a change of load on a shared machine hits all alike. Also
timed: minGRU with its scan as one associative scan over the whole sequence (``block=T``, the
accelerator default) and on the reference kernel, to show what the CPU default (``block=1``) buys.

  python bench/mingru_scaling.py                        # T = 256, 1024, 4096, 16384; B=8, I=32, H=128
  python bench/mingru_scaling.py --T 256 1024 --out bench/results_mingru.md
  python bench/mingru_scaling.py --T 4096 --impls "mingru parallel, block=1" "mingru parallel, block=8" \
      "mingru parallel, block=64" "mingru parallel, block=T"       # the block sweep
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxlstm
from jaxlstm._src.kernels import parallel


@contextlib.contextmanager
def block_size(n):
  """The parallel kernel's block while a function is traced (``None``: its default)."""
  old = parallel.default_block
  if n is not None:
    parallel.default_block = (lambda T: T) if n == "T" else (lambda T: n)
  try:
    yield
  finally:
    parallel.default_block = old


# name: (cell, impl, block)
IMPLS = {
  "mingru parallel": ("mingru", "parallel", None),
  "minlstm parallel": ("minlstm", "parallel", None),
  "lstm fused": ("lstm", "fused", None),
  "mingru parallel, block=T": ("mingru", "parallel", "T"),
  "mingru reference": ("mingru", "reference", None),
  # Not run by default: the block sweep behind parallel.default_block.
  "mingru parallel, block=1": ("mingru", "parallel", 1),
  "mingru parallel, block=8": ("mingru", "parallel", 8),
  "mingru parallel, block=64": ("mingru", "parallel", 64),
}
DEFAULT = ["mingru parallel", "minlstm parallel", "lstm fused", "mingru parallel, block=T", "mingru reference"]


def make_step(name, B, T, I, H, seed=0):
  cell, impl, block = IMPLS[name]
  rng = np.random.default_rng(seed)
  layer = jaxlstm.get_cell(cell).init(jax.random.key(seed), I, H)
  readout = jnp.asarray(rng.standard_normal((H, 1)) / H**0.5, jnp.float32)
  xs = jnp.asarray(rng.standard_normal((B, T, I)), jnp.float32)
  ys = jnp.asarray(rng.standard_normal((B, T, 1)), jnp.float32)

  def loss(model):
    layer, w = model
    with block_size(block):
      _, hs = jaxlstm.layer(layer, xs, impl=impl)
    return jnp.mean(jnp.square(hs @ w - ys))

  return jax.jit(jax.value_and_grad(loss)), ((layer, readout),)


def median_times(calls, steps, warmup):
  """Median ms of each ``(fn, args)`` over ``steps`` rounds, after ``warmup`` untimed calls of each."""
  for fn, args in calls:
    for _ in range(warmup):
      jax.block_until_ready(fn(*args))
  times = [[] for _ in calls]
  for _ in range(steps):
    for (fn, args), ts in zip(calls, times):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      ts.append(time.perf_counter() - t0)
  return [1e3 * statistics.median(ts) for ts in times]


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--T", type=int, nargs="+", default=[256, 1024, 4096, 16384])
  p.add_argument("--B", type=int, default=8)
  p.add_argument("--I", type=int, default=32)
  p.add_argument("--H", type=int, default=128)
  p.add_argument("--steps", type=int, default=7, help="timed calls per implementation and T")
  p.add_argument("--warmup", type=int, default=2, help="untimed calls after compiling")
  p.add_argument("--impls", nargs="+", default=DEFAULT, choices=list(IMPLS))
  p.add_argument("--out", help="also write the markdown table to this file")
  args = p.parse_args()

  rows = []
  for T in args.T:
    calls = [make_step(name, args.B, T, args.I, args.H) for name in args.impls]
    ms = dict(zip(args.impls, median_times(calls, args.steps, args.warmup)))
    rows.append((T, ms))
    print(T, {k: round(v, 1) for k, v in ms.items()}, flush=True)

  head = "| T | " + " | ".join(f"{name} (ms)" for name in args.impls)
  ratio = "lstm fused" in args.impls and "mingru parallel" in args.impls
  head += " | fused LSTM / minGRU parallel |" if ratio else " |"
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for T, ms in rows:
    line = f"| {T} | " + " | ".join(f"{ms[name]:.1f}" for name in args.impls)
    line += f" | {ms['lstm fused'] / ms['mingru parallel']:.2f}x |" if ratio else " |"
    lines.append(line)
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  lines += [
    "",
    (
      f"B={args.B}, I={args.I}, H={args.H}, float32; median of {args.steps} calls after {args.warmup} "
      f"warm-up calls; jax {jax.__version__} on {jax.default_backend()} ({platform.machine()}, "
      f"{os.cpu_count()} cores, 1-minute load {load:.2f} at the end)."
    ),
  ]
  table = "\n".join(lines)
  print(table)
  if args.out:
    with open(args.out, "w") as f:
      f.write(table + "\n")


if __name__ == "__main__":
  main()
