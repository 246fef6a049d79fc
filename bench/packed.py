"""A bidirectional LSTM on right-padded sequences: jaxlstm's ``lengths`` against PyTorch's packed sequences.

Both sides train the same model, a 2-layer bidirectional LSTM (S shapes: B=32, T=100, I=10, H=128) with
random lengths in [T/4, T], a Dense(10) head on the mean of the valid outputs, softmax cross-entropy and
Adam. jaxlstm calls ``jaxlstm.stack(..., lengths=lengths)`` at its defaults (``impl="auto"``); PyTorch runs
``nn.LSTM(bidirectional=True)`` on ``pack_padded_sequence`` at its defaults (``enforce_sorted=False``, as a
user with unsorted batches writes it). Each side runs in its own process, the two alternating over
``--rounds``; the report gives each side's median step over the pooled steps and the ratio.

  python bench/packed.py                 # 3 rounds of 15 steps each
  python bench/packed.py --rounds 5 --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

B, T, I, H, LAYERS, CLASSES = 32, 100, 10, 128, 2, 10


def data():
  rng = np.random.default_rng(0)
  xs = rng.standard_normal((B, T, I)).astype(np.float32)
  lengths = rng.integers(T // 4, T + 1, size=B)
  labels = rng.integers(0, CLASSES, size=B)
  return xs, lengths, labels


def jax_step():
  import jax
  import jax.numpy as jnp
  import optax

  import jaxlstm

  xs, lengths, labels = (jnp.asarray(a) for a in data())
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {
    "rnn": jaxlstm.stack_init(k1, I, H, LAYERS, bidirectional=True),
    "w": jax.random.normal(k2, (2 * H, CLASSES)) / (2 * H) ** 0.5,
    "b": jnp.zeros((CLASSES,)),
  }
  opt = optax.adam(1e-3)
  state = opt.init(params)

  def loss(p):
    _, hs = jaxlstm.stack(p["rnn"], xs, lengths=lengths)  # (B, T, 2H), zero past each length
    pooled = hs.sum(1) / lengths[:, None]
    return optax.softmax_cross_entropy_with_integer_labels(pooled @ p["w"] + p["b"], labels).mean()

  @jax.jit
  def step(p, s):
    g = jax.grad(loss)(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  carry = [params, state]

  def call():
    carry[0], carry[1] = step(*carry)
    jax.block_until_ready(carry[0])

  return call


def torch_step():
  import torch

  torch.set_flush_denormal(True)  # as XLA does on CPU: both sides compute the same thing
  torch.manual_seed(0)
  xs, lengths, labels = data()
  xs, labels, lengths_t = torch.from_numpy(xs), torch.from_numpy(labels).long(), torch.from_numpy(lengths)
  lstm = torch.nn.LSTM(I, H, num_layers=LAYERS, batch_first=True, bidirectional=True)
  head = torch.nn.Linear(2 * H, CLASSES)
  params = list(lstm.parameters()) + list(head.parameters())
  opt = torch.optim.Adam(params, lr=1e-3)

  def call():
    opt.zero_grad()
    packed = torch.nn.utils.rnn.pack_padded_sequence(xs, lengths_t, batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    hs, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    pooled = hs.sum(1) / lengths_t[:, None]
    torch.nn.functional.cross_entropy(head(pooled), labels).backward()
    opt.step()

  return call


def worker(side: str, steps: int) -> None:
  call = {"jaxlstm": jax_step, "torch": torch_step}[side]()
  call()  # compile / warm up
  call()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
  print(json.dumps(times))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--steps", type=int, default=15)
  ap.add_argument("--worker", choices=["jaxlstm", "torch"])
  args = ap.parse_args()
  if args.worker:
    return worker(args.worker, args.steps)
  pooled: dict[str, list] = {"jaxlstm": [], "torch": []}
  for r in range(args.rounds):
    for side in ("jaxlstm", "torch") if r % 2 == 0 else ("torch", "jaxlstm"):
      cmd = [sys.executable, __file__, "--worker", side, "--steps", str(args.steps)]
      out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
      pooled[side] += json.loads(out)
      print(f"round {r + 1} {side}: median {1e3 * statistics.median(json.loads(out)):.1f} ms", flush=True)
  med = {k: 1e3 * statistics.median(v) for k, v in pooled.items()}
  print()
  print("| side | median training step (ms) | n |")
  print("|---|---:|---:|")
  print(f'| jaxlstm, `lengths` (impl="auto") | {med["jaxlstm"]:.1f} | {len(pooled["jaxlstm"])} |')
  print(f"| PyTorch, packed sequences | {med['torch']:.1f} | {len(pooled['torch'])} |")
  print()
  print(f"PyTorch / jaxlstm: **{med['torch'] / med['jaxlstm']:.2f}**")


if __name__ == "__main__":
  main()
