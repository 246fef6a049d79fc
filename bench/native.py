"""The native CPU kernel against the XLA fused kernel, side by side in one process.

Times the median of ``--steps`` calls of one jitted step of the S, M and L configs (a stack, a Dense head on
every step, MSE loss; ``train`` is a whole Adam step, ``fwd`` the loss alone), calling the two kernels in turn so
that a change of load on a shared machine hits both alike, and prints fused / native (above 1: native is faster).

  python bench/native.py --configs S M L --modes fwd train
  JAXLSTM_NATIVE_THREADS=1 python bench/native.py --configs S   # the native loops on one thread
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from fused_micro import make_call, median_times  # noqa: E402

from jaxlstm.kernels import native  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--configs", nargs="+", default=["S", "M", "L"])
  ap.add_argument("--modes", nargs="+", choices=["fwd", "train"], default=["fwd", "train"])
  ap.add_argument("--steps", type=int, default=10)
  args = ap.parse_args()
  if native.load_error() is not None:
    sys.exit(native.load_error())
  for mode in args.modes:
    for name in args.configs:
      native_ms, fused_ms = median_times([make_call(name, impl, mode, 1) for impl in ("native", "fused")], args.steps)
      print(
        f"{name} {mode}: native {native_ms:8.1f} ms  fused {fused_ms:8.1f} ms  fused/native {fused_ms / native_ms:.2f}",
        flush=True,
      )


if __name__ == "__main__":
  main()
