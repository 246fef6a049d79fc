"""Microbenchmark of a fused kernel against the reference scan, in one process.

Times the median of ``--steps`` calls of one jitted Adam training step
(stack -> Dense on every step -> MSE loss) or of the forward pass alone, for
each implementation side by side, and prints the ratio. The machine may be
shared, so compare the two columns of one run rather than absolute numbers.

  python bench/fused_micro.py --configs S M L --mode train
  python bench/fused_micro.py --configs S M --mode fwd
  python bench/fused_micro.py --cell gru --configs S M   # fused_gru against reference; --cell rnn likewise
  python bench/fused_micro.py --cell gru --impls fused_gru torch   # against torch.nn.GRU at its defaults
  python bench/fused_micro.py --remat 100 --T 20000   # long sequence, memory: run under /usr/bin/time -v
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxlstm

# name: (B, T, input size, H, layers, outputs)
CONFIGS = {"S": (32, 100, 10, 128, 3, 10), "M": (64, 256, 64, 256, 2, 10), "L": (128, 512, 128, 512, 1, 10)}
# cell: its fused kernel, the default first column
FUSED = {"lstm": "fused", "gru": "fused_gru", "rnn": "fused_rnn"}


def make(cfg, seed=0, cell="lstm"):
  """The model, inputs and targets of a config; ``cell="proj"`` is the LSTM with ``proj_size=H // 2``."""
  B, T, I, H, L, O = cfg
  options = {"proj_size": H // 2} if cell == "proj" else {}
  params = jaxlstm.stack_init(jax.random.key(seed), I, H, L, cell="lstm" if cell == "proj" else cell, **options)
  out = options.get("proj_size", H)
  rng = np.random.default_rng(seed)
  dense = (jnp.asarray(rng.standard_normal((out, O)) / out**0.5, jnp.float32), jnp.zeros((O,), jnp.float32))
  xs = jnp.asarray(rng.standard_normal((B, T, I)), jnp.float32)
  ys = jnp.asarray(rng.standard_normal((B, T, O)), jnp.float32)
  return (params, dense), xs, ys


def loss_fn(model, xs, ys, impl, unroll):
  params, (w, b) = model
  _, hs = jaxlstm.stack(params, xs, impl=impl, unroll=unroll)
  return jnp.mean(jnp.square(hs @ w + b - ys))


def median_times(calls, steps):
  """Median ms of each ``(fn, args)``, calling them in turn so that load changes hit all alike."""
  for fn, args in calls:
    jax.block_until_ready(fn(*args))
  times = [[] for _ in calls]
  for _ in range(steps):
    for (fn, args), ts in zip(calls, times):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      ts.append(time.perf_counter() - t0)
  return [1e3 * statistics.median(ts) for ts in times]


def median_time(fn, args, steps):
  return median_times([(fn, args)], steps)[0]


def make_torch_call(cfg_name, mode, cell):
  """The same model, loss and Adam step in PyTorch (``nn.LSTM``, ``nn.GRU`` or ``nn.RNN``), at its defaults.

  Denormals are flushed to zero, as XLA's CPU backend does (``bench/peers.py`` explains why).
  """
  import torch

  torch.set_flush_denormal(True)
  torch.manual_seed(0)
  B, T, I, H, L, O = CONFIGS[cfg_name]
  _, xs, ys = make(CONFIGS[cfg_name], cell=cell)
  xs, ys = torch.from_numpy(np.asarray(xs)), torch.from_numpy(np.asarray(ys))
  rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](I, H, num_layers=L, batch_first=True)
  head = torch.nn.Linear(H, O)
  modules = torch.nn.ModuleList([rnn, head])

  def loss():
    return torch.mean(torch.square(head(rnn(xs)[0]) - ys))

  if mode == "fwd":

    def fwd():
      with torch.inference_mode():
        return loss().item()

    return fwd, ()
  opt = torch.optim.Adam(modules.parameters(), lr=1e-3)

  def step():
    opt.zero_grad(set_to_none=True)
    value = loss()
    value.backward()
    opt.step()
    return value.item()

  return step, ()


def make_call(cfg_name, impl, mode, unroll, cell="lstm"):
  if impl == "torch":
    return make_torch_call(cfg_name, mode, cell)
  model, xs, ys = make(CONFIGS[cfg_name], cell=cell)
  if mode == "train":
    opt = optax.adam(1e-3)
    opt_state = opt.init(model)

    @jax.jit
    def step(model, opt_state):
      loss, grads = jax.value_and_grad(loss_fn)(model, xs, ys, impl, unroll)
      updates, opt_state = opt.update(grads, opt_state, model)
      return optax.apply_updates(model, updates), opt_state, loss

    # Re-feeding the same params keeps every call identical.
    return step, (model, opt_state)
  fwd = jax.jit(functools.partial(loss_fn, impl=impl, unroll=unroll))
  return fwd, (model, xs, ys)


def remat_run(T, B, I, H, remat, steps):
  """Training step time of one layer at a long ``T``; run in its own process to read max RSS."""
  params = jaxlstm.lstm_init(jax.random.key(0), I, H)
  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.standard_normal((B, T, I)), jnp.float32)
  state = jaxlstm.lstm_zero_state(params, (B,))

  @jax.jit
  def grad(params):
    def loss(params):
      _, hs = jaxlstm.lstm(params, xs, state, impl="fused", remat=remat)
      return jnp.mean(jnp.square(hs))

    return jax.grad(loss)(params)

  ms = median_time(grad, (params,), steps)
  # The CPU backend keeps no memory stats: read the peak from `/usr/bin/time -v` (max RSS).
  print(f"T={T} B={B} I={I} H={H} remat={remat}: {ms:.0f} ms/step")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--configs", nargs="+", default=["S", "M"])
  ap.add_argument("--cell", choices=list(FUSED), default="lstm")
  ap.add_argument(
    "--impls", nargs="+", default=None, help="kernels, or torch; default: the cell's fused kernel and reference"
  )
  ap.add_argument("--mode", choices=["train", "fwd"], default="train")
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--unroll", type=int, default=1)
  ap.add_argument("--remat", type=int, default=0, help="run the long-sequence test instead (0: no remat)")
  ap.add_argument("--T", type=int, default=0, help="sequence length for the long-sequence test")
  ap.add_argument("--B", type=int, default=8)
  ap.add_argument("--H", type=int, default=128)
  args = ap.parse_args()
  fast = FUSED[args.cell]
  impls = args.impls or [fast, "reference"]
  if args.T:
    remat_run(args.T, args.B, 16, args.H, args.remat or None, min(args.steps, 3))
    return
  for name in args.configs:
    ms = median_times([make_call(name, impl, args.mode, args.unroll, args.cell) for impl in impls], args.steps)
    row = dict(zip(impls, ms))
    cells = "  ".join(f"{impl} {ms:8.1f} ms" for impl, ms in row.items())
    ratio = ""
    if fast in row and "reference" in row:
      ratio = f"  speedup {row['reference'] / row[fast]:.2f}x"
    if fast in row and "torch" in row:
      ratio += f"  torch/{fast} {row['torch'] / row[fast]:.2f}x"
    cell = "" if args.cell == "lstm" else f"{args.cell} "
    print(f"{cell}{name} {args.mode} unroll={args.unroll}: {cells}{ratio}", flush=True)


if __name__ == "__main__":
  main()
