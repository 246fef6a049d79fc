"""What the benchmark runs: the model shapes, the training settings every peer shares, steps and rounds
per config, and the model's parameter and FLOP counts."""

from __future__ import annotations

from typing import NamedTuple

NUM_CLASSES = 10
LEARNING_RATE = 1e-3
ADAM_EPS = 1e-8
# Side of the square float32 matmul that gives the machine's GEMM ceiling.
CEILING_N = 2048
GPU_CEILING_N = 8192


class Config(NamedTuple):
  """One benchmark shape: batch, time steps, input size, hidden size, layers."""

  B: int
  T: int
  I: int
  H: int
  layers: int


CONFIGS = {
  "S": Config(B=32, T=100, I=10, H=128, layers=3),
  "M": Config(B=64, T=256, I=64, H=256, layers=2),
  "L": Config(B=128, T=512, I=128, H=512, layers=1),
  "XL": Config(B=256, T=512, I=512, H=1024, layers=2),  # for GPUs
  "DB": Config(B=128, T=25, I=1024, H=1024, layers=1),  # DeepBench-style: wide and short, for GPUs
  "Q": Config(B=4, T=8, I=3, H=8, layers=2),  # --quick
}
# Timed steps per peer per config, pooled over the rounds, when --steps does not say (L steps take seconds).
DEFAULT_STEPS = {"S": 20, "M": 12, "L": 10, "XL": 10, "DB": 10, "Q": 2}
DEFAULT_ROUNDS = {"S": 2, "M": 2, "L": 2, "XL": 1, "DB": 1, "Q": 1}
GPU_STEPS = {"S": 30, "M": 20, "L": 20, "XL": 10, "DB": 20, "Q": 2}
GPU_ROUNDS = {"S": 1, "M": 1, "L": 1, "XL": 1, "DB": 1, "Q": 1}


# The benchmarked cells (``--cell``): the plain LSTM, PyTorch's GRU, and two LSTM options, LayerNorm
# (jaxlstm only) and a projection to half the hidden size (PyTorch's ``proj_size``).
CELLS = ("lstm", "gru", "layernorm", "proj")
# Gate blocks of each benchmarked cell: the columns of its GEMMs are GATES * H.
GATES = {"lstm": 4, "gru": 3, "layernorm": 4, "proj": 4}


def out_size(cfg: Config, cell: str = "lstm") -> int:
  """A layer's output size: ``H``, or ``P = H // 2`` for the projected LSTM."""
  return cfg.H // 2 if cell == "proj" else cfg.H


def param_count(cfg: Config, cell: str = "lstm") -> int:
  """Parameters of the shared model: per layer ``w_x (I, gH)``, ``w_h (P, gH)``, ``b (gH,)`` for ``g`` gates
  and output size ``P`` (the GRU's ``b_hn (H,)``, the LayerNorm LSTM's gains and biases ``10H``, the projected
  LSTM's ``w_proj (H, P)``); then Dense(10)."""
  g = GATES[cell]
  H, P = cfg.H, out_size(cfg, cell)
  extra = {"gru": H, "layernorm": 10 * H, "proj": H * P}.get(cell, 0)
  total = 0
  size = cfg.I
  for _ in range(cfg.layers):
    total += size * g * H + P * g * H + g * H + extra
    size = P
  return total + P * NUM_CLASSES + NUM_CLASSES


def forward_flops(cfg: Config, cell: str = "lstm") -> float:
  """FLOPs of one forward pass.

  Per layer and time step: the two gate GEMMs, ``2 * B * (I + P) * gH`` for ``g``
  gates and output size ``P``, the projected LSTM's ``2 * B * H * P``, plus about
  ``10 * B * H`` elementwise operations (biases, activations, the state update;
  ``90 * B * H`` with LayerNorm's three normalizations). Then the Dense head on the
  last step.
  """
  H, P = cfg.H, out_size(cfg, cell)
  per_step = 2.0 * cfg.B * H * P if cell == "proj" else 0.0
  per_step += (90.0 if cell == "layernorm" else 10.0) * cfg.B * H
  flops = 0.0
  size = cfg.I
  for _ in range(cfg.layers):
    flops += cfg.T * (2.0 * cfg.B * (size + P) * GATES[cell] * H + per_step)
    size = P
  return flops + 2.0 * cfg.B * P * NUM_CLASSES


def step_flops(cfg: Config, mode: str, cell: str = "lstm") -> float:
  """FLOPs of one step: the forward pass, or about three of them for a training step."""
  return forward_flops(cfg, cell) * (3.0 if mode == "train" else 1.0)
