"""The native CPU kernels against the XLA fused kernels, side by side in one process.

Times the median of ``--steps`` calls of one jitted step of the S, M and L configs (a stack, a Dense head on
every step, MSE loss; ``train`` is a whole Adam step, ``fwd`` the loss alone), calling the two kernels in turn so
that a change of load on a shared machine hits both alike, and prints fused / native (above 1: native is faster).

  python bench/native.py --configs S M L --modes fwd train
  python bench/native.py --cell gru --configs S M        # native_gru against fused_gru
  python bench/native.py --cell proj --configs S M       # the projected LSTM (proj_size = H / 2)
  JAXLSTM_NATIVE_THREADS=1 python bench/native.py --configs S   # the native loops on one thread
  python bench/native.py --panels --configs S M L   # native: the panel GEMM (panels.h) against OpenBLAS's sgemm
  python bench/native.py --panels --train-min-hidden 0   # ... with both loops native in training at every size
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import jax  # noqa: E402
from fused_micro import make_call, median_times  # noqa: E402

from jaxlstm.kernels import native, native_gru  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--configs", nargs="+", default=["S", "M", "L"])
  ap.add_argument("--modes", nargs="+", choices=["fwd", "train"], default=["fwd", "train"])
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--cell", choices=["lstm", "gru", "proj"], default="lstm")
  ap.add_argument("--panels", action="store_true", help="the native kernel with its panel GEMM against sgemm")
  ap.add_argument(
    "--train-min-hidden",
    type=int,
    help="TRAIN_MIN_HIDDEN of native (or native_gru) for this run (default: the library's)",
  )
  args = ap.parse_args()
  impls = ("native_gru", "fused_gru") if args.cell == "gru" else ("native", "fused")
  if native.load_error() is not None:
    sys.exit(native.load_error())
  if args.train_min_hidden is not None:
    (native_gru if args.cell == "gru" else native).TRAIN_MIN_HIDDEN = args.train_min_hidden
  for mode in args.modes:
    for name in args.configs:
      if args.panels:
        panels_ms, sgemm_ms = median_times(
          [with_panels(make_call(name, impls[0], mode, 1, cell=args.cell), m) for m in (2, 0)], args.steps
        )
        print(
          f"{args.cell} {name} {mode}: panels {panels_ms:8.1f} ms  sgemm {sgemm_ms:8.1f} ms  "
          f"sgemm/panels {sgemm_ms / panels_ms:.2f}"
        )
        continue
      native_ms, fused_ms = median_times([make_call(name, impl, mode, 1, cell=args.cell) for impl in impls], args.steps)
      ratio = fused_ms / native_ms
      print(
        f"{args.cell} {name} {mode}: native {native_ms:8.1f} ms  fused {fused_ms:8.1f} ms  fused/native {ratio:.2f}"
      )


def with_panels(call, mode):
  """``call`` with the native panel mode (``native.set_panels``) set to ``mode`` for each of its calls."""
  fn, args = call

  def run(*a):
    previous = native.set_panels(mode)
    try:
      return jax.block_until_ready(fn(*a))
    finally:
      native.set_panels(previous)

  return run, args


if __name__ == "__main__":
  main()
