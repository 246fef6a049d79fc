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


# Gate blocks of each benchmarked cell: the columns of its GEMMs are GATES * H.
GATES = {"lstm": 4, "gru": 3}


def param_count(cfg: Config, cell: str = "lstm") -> int:
  """Parameters of the shared model: per layer ``w_x (I, gH)``, ``w_h (H, gH)``, ``b (gH,)`` for ``g`` gates
  (and the GRU's ``b_hn (H,)``); then Dense(10)."""
  g = GATES[cell]
  total = 0
  size = cfg.I
  for _ in range(cfg.layers):
    total += size * g * cfg.H + cfg.H * g * cfg.H + g * cfg.H + (cfg.H if cell == "gru" else 0)
    size = cfg.H
  return total + cfg.H * NUM_CLASSES + NUM_CLASSES


def forward_flops(cfg: Config, cell: str = "lstm") -> float:
  """FLOPs of one forward pass.

  Per layer and time step: the two gate GEMMs, ``2 * B * (I + H) * gH`` for ``g``
  gates, plus about ``10 * B * H`` elementwise operations (biases, activations,
  the state update). Then the Dense head on the last step.
  """
  flops = 0.0
  size = cfg.I
  for _ in range(cfg.layers):
    flops += cfg.T * (2.0 * cfg.B * (size + cfg.H) * GATES[cell] * cfg.H + 10.0 * cfg.B * cfg.H)
    size = cfg.H
  return flops + 2.0 * cfg.B * cfg.H * NUM_CLASSES


def step_flops(cfg: Config, mode: str, cell: str = "lstm") -> float:
  """FLOPs of one step: the forward pass, or about three of them for a training step."""
  return forward_flops(cfg, cell) * (3.0 if mode == "train" else 1.0)
