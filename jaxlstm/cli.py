"""The ``jaxlstm`` command (also ``python -m jaxlstm``): a thin shell over the library."""

from __future__ import annotations

import argparse
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
    return jnp.mean(states[-1].h ** 2) + jnp.mean(hs ** 2)

  t0 = time.perf_counter()
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
  jax.block_until_ready(grads)
  dt = time.perf_counter() - t0
  states, hs = jaxlstm.stack(params, xs, lengths=lengths)
  print(f"stacked LSTM: {args.layers} layers, hidden {args.hidden}, peephole={args.peephole}")
  print(f"xs {tuple(xs.shape)} -> hs {tuple(hs.shape)}; final h per layer {[tuple(s.h.shape) for s in states]}")
  print(f"loss {float(loss):.6f}, gradient global norm {float(optax.tree.norm(grads)):.6f} "
        f"(compiled and run in {dt:.2f} s on {jax.devices()[0].platform})")
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxlstm", description="Recurrent networks in JAX.")
  sub = parser.add_subparsers(dest="command", required=True)
  demo = sub.add_parser("demo", help="run a stacked LSTM forward and backward and print shapes")
  demo.add_argument("--batch", type=int, default=4)
  demo.add_argument("--steps", type=int, default=20, help="sequence length T")
  demo.add_argument("--input-size", type=int, default=8)
  demo.add_argument("--hidden", type=int, default=32)
  demo.add_argument("--layers", type=int, default=2)
  demo.add_argument("--peephole", action="store_true")
  demo.add_argument("--seed", type=int, default=0)
  demo.set_defaults(func=_demo)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  return args.func(args)


if __name__ == "__main__":
  sys.exit(main())
