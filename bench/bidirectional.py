"""Does a bidirectional layer pay for running both directions in one loop? Times three forms of one layer:

* ``two loops``: the forward and the backward direction as two fused-kernel calls, what ``jaxlstm.stack`` does;
* ``one loop, batched``: both directions as one call ``vmap``-ed over the direction (a batched GEMM per step);
* ``one loop, block-diagonal``: one layer of ``2H`` units, the cost of both directions as one GEMM per step with
  a block-diagonal ``w_h`` (twice the recurrent FLOPs, half the per-step overhead).

Each is jitted once, forward and training step (``grad`` of a sum of squares), called in turn; medians and ratios to
the two loops. The machine may be shared: compare the ratios of one run.

  python bench/bidirectional.py                      # S and M shapes
  python bench/bidirectional.py --configs S --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import jaxlstm

CONFIGS = {"S": (32, 100, 32, 128), "M": (64, 256, 64, 256)}  # B, T, I, H


def forms(I, H):
  """``{name: f(pf, pb, pw, xs) -> (B, T, 2H)}``."""

  def two(pf, pb, pw, xs):
    f = jaxlstm.lstm(pf, xs, impl="fused")[1]
    b = jaxlstm.lstm(pb, xs, reverse=True, impl="fused")[1]
    return jnp.concatenate([f, b], -1)

  def batched(pf, pb, pw, xs):
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), pf, pb)
    ys = jax.vmap(lambda p, x: jaxlstm.lstm(p, x, impl="fused")[1])(both, jnp.stack([xs, xs[:, ::-1]]))
    return jnp.concatenate([ys[0], ys[1][:, ::-1]], -1)

  def wide(pf, pb, pw, xs):
    return jaxlstm.lstm(pw, xs, impl="fused")[1]  # same shapes and FLOPs as the block-diagonal form

  return {"two loops": two, "one loop, batched": batched, "one loop, block-diagonal": wide}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--configs", nargs="+", default=["S", "M"], choices=sorted(CONFIGS))
  ap.add_argument("--steps", type=int, default=10)
  args = ap.parse_args()
  print("| config | form | forward (ms) | × two loops | training step (ms) | × two loops |")
  print("|---|---|---:|---:|---:|---:|")
  for name in args.configs:
    B, T, I, H = CONFIGS[name]
    pf, pb = jaxlstm.lstm_init(jax.random.key(0), I, H), jaxlstm.lstm_init(jax.random.key(1), I, H)
    pw = jaxlstm.lstm_init(jax.random.key(2), I, 2 * H)
    xs = jax.random.normal(jax.random.key(3), (B, T, I))
    fns = {}
    for form, f in forms(I, H).items():
      fns[form, "fwd"] = jax.jit(f)
      fns[form, "train"] = jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) ** 2), argnums=(0, 1, 2)))
    for f in fns.values():
      jax.block_until_ready(f(pf, pb, pw, xs))
    times = {k: [] for k in fns}
    for _ in range(args.steps):
      for k, f in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(f(pf, pb, pw, xs))
        times[k].append(time.perf_counter() - t0)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    for form in forms(I, H):
      f, t = med[form, "fwd"], med[form, "train"]
      f0, t0 = med["two loops", "fwd"], med["two loops", "train"]
      print(f"| {name} | {form} | {f:.1f} | {f / f0:.2f} | {t:.1f} | {t / t0:.2f} |")


if __name__ == "__main__":
  main()
