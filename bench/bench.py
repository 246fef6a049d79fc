"""Side-by-side LSTM benchmark: jaxlstm (fused, reference, cuDNN) against Flax, Keras 3, cuDNN and PyTorch.

  python bench/bench.py                          # full run: train S, M, L; inference S, M
  python bench/bench.py --quick                  # tiny smoke run: 1-2 minutes, mostly imports and compiles
  python bench/bench.py --configs S,M --infer-configs S --steps 20 --rounds 3
  python bench/bench.py --steps S=10,M=4,L=2 --rounds S=2,M=2,L=1 --warmup 0   # on a busy machine
  python bench/bench.py --peers jaxlstm-fused,torch --out /tmp/results.md
  python bench/bench.py --render bench/results.json   # rewrite results.md from a saved run
  python bench/bench.py --device gpu --out bench/results_gpu.md   # on a CUDA GPU, with the cuDNN peers

Every peer trains the same model: a stack of LSTM layers, a Dense(10) head on
the last time step's output, softmax cross-entropy against random integer
labels, Adam with learning rate 1e-3. A timed training step is forward +
backward + optimizer update; an inference step is the forward pass alone.

Each measurement runs in its own subprocess (``bench.py --worker SPEC``), so
thread pools and allocators of JAX and PyTorch never share a process. The
peers run one after another, in an order rotated every round, for
``--rounds`` rounds per config; the ``--steps`` timed steps of all rounds are
pooled into a median and an interquartile range. The first step of each
round (tracing and compilation for the JAX peers) is reported separately,
and further ``--warmup`` steps are dropped. A jitted 2048 x 2048 float32 matmul, measured
in every round, gives the machine's GEMM ceiling; each peer's achieved
GFLOP/s is reported as a fraction of it.

The report goes to ``--out`` (Markdown) with the raw numbers beside it
(``.json``); after each config the run so far is saved to ``.partial.json``,
which ``--render`` turns into a report if the run is cut short.

Peers (``--peers``):
  jaxlstm-fused  ``jaxlstm.stack(..., impl="fused")``, whole step in one ``jax.jit``, optax.adam
  jaxlstm-ref    the same with ``impl="reference"`` (``lax.scan`` over the cell)
  flax           Linen ``nn.RNN(nn.OptimizedLSTMCell(H))`` stack, optax.adam, jitted
  keras          Keras 3 on JAX, ``keras.layers.LSTM`` stack, ``model.train_on_batch``
                 / ``model.predict_on_batch`` (Keras compiles these with ``jax.jit``)
  keras-jit      the same Keras model through a hand-written jitted stateless step
                 (``stateless_call`` + ``optimizer.stateless_apply``); not run by default
  torch          ``torch.nn.LSTM(num_layers=L)`` + ``Linear``, ``torch.optim.Adam``, 2 threads (or CUDA)
  jaxlstm-cudnn  ``jaxlstm.stack(..., impl="cudnn")`` (GPU only)
  jax-cudnn      ``jax.experimental.rnn.lstm``, all layers in one cuDNN call (GPU only)
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

RESULT_TAG = "BENCH_RESULT "
NUM_CLASSES = 10
LEARNING_RATE = 1e-3
ADAM_EPS = 1e-8
TORCH_THREADS = 2
CEILING_N = 2048
GPU_CEILING_N = 8192
REFERENCE_PEER = "jaxlstm-fused"
ALL_PEERS = ("jaxlstm-fused", "jaxlstm-ref", "jaxlstm-cudnn", "jax-cudnn", "flax", "keras", "keras-jit", "torch")
DEFAULT_PEERS = ("jaxlstm-fused", "jaxlstm-ref", "flax", "keras", "torch")
DEFAULT_GPU_PEERS = ("jaxlstm-fused", "jaxlstm-ref", "jaxlstm-cudnn", "jax-cudnn", "flax", "torch")
# Library each peer imports: if it is missing the peer is skipped.
PEER_LIBRARY = {"jaxlstm-fused": "jaxlstm", "jaxlstm-ref": "jaxlstm", "jaxlstm-cudnn": "jaxlstm",
                "jax-cudnn": "jax.experimental.rnn", "flax": "flax", "keras": "keras", "keras-jit": "keras",
                "torch": "torch"}


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
    "Q": Config(B=4, T=8, I=3, H=8, layers=2),  # --quick
}
# Timed steps per peer per config, pooled over the rounds, when --steps does not say (L steps take seconds).
DEFAULT_STEPS = {"S": 20, "M": 12, "L": 10, "XL": 10, "Q": 2}
DEFAULT_ROUNDS = {"S": 2, "M": 2, "L": 2, "XL": 1, "Q": 1}
GPU_STEPS = {"S": 30, "M": 20, "L": 20, "XL": 10, "Q": 2}
GPU_ROUNDS = {"S": 1, "M": 1, "L": 1, "XL": 1, "Q": 1}


# --------------------------------------------------------------------------------------------------
# Model size and work


def param_count(cfg: Config) -> int:
  """Parameters of the shared model: per layer ``w_x (I,4H)``, ``w_h (H,4H)``, ``b (4H,)``; then Dense(10)."""
  total = 0
  size = cfg.I
  for _ in range(cfg.layers):
    total += size * 4 * cfg.H + cfg.H * 4 * cfg.H + 4 * cfg.H
    size = cfg.H
  return total + cfg.H * NUM_CLASSES + NUM_CLASSES


def forward_flops(cfg: Config) -> float:
  """FLOPs of one forward pass.

  Per layer and time step: the two gate GEMMs, ``2 * B * (I + H) * 4H``, plus
  about ``10 * B * H`` elementwise operations (bias, four activations, the cell
  update, ``tanh(c)`` and the output gate). Then the Dense head on the last step.
  """
  flops = 0.0
  size = cfg.I
  for _ in range(cfg.layers):
    flops += cfg.T * (2.0 * cfg.B * (size + cfg.H) * 4 * cfg.H + 10.0 * cfg.B * cfg.H)
    size = cfg.H
  return flops + 2.0 * cfg.B * cfg.H * NUM_CLASSES


def step_flops(cfg: Config, mode: str) -> float:
  """FLOPs of one step: the forward pass, or about three of them for a training step."""
  return forward_flops(cfg) * (3.0 if mode == "train" else 1.0)


# --------------------------------------------------------------------------------------------------
# Workers: each runs in its own process and prints one RESULT_TAG line of JSON.


def make_data(cfg: Config, seed: int = 0):
  """Random inputs ``(B, T, I)`` float32 and labels ``(B,)`` int32, as NumPy arrays."""
  import numpy as np
  rng = np.random.default_rng(seed)
  xs = rng.standard_normal((cfg.B, cfg.T, cfg.I)).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, size=(cfg.B,)).astype(np.int32)
  return xs, labels


def time_calls(call, steps: int, warmup: int) -> dict:
  """Times ``call()`` (which must block until its result is ready).

  Returns the first call's time (compile + first step), the times of
  ``steps`` calls after ``warmup`` further untimed ones, and the process's
  minor page faults per timed call: each page of memory that a step touches
  for the first time costs one, a large part of a CPU step (see README).
  """
  t0 = time.perf_counter()
  call()
  first = time.perf_counter() - t0
  for _ in range(warmup):
    call()
  times = []
  faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(steps):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
  return {"first_s": first, "times_s": times, "faults": faults}


def count_leaves(tree) -> int:
  """Number of scalars in a pytree of arrays."""
  import jax
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))


def jax_xent(logits, labels):
  """Mean softmax cross-entropy of integer labels."""
  import optax
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def jax_runner(init_fn, apply_fn, cfg: Config, mode: str):
  """A blocking step callable and the parameter count, for a JAX model given as ``(init_fn, apply_fn)``.

  ``apply_fn(params, xs) -> logits``. Training jits loss, gradient and the
  optax Adam update together and donates params and optimizer state.
  """
  import jax
  import jax.numpy as jnp
  import optax
  xs_np, labels_np = make_data(cfg)
  xs, labels = jnp.asarray(xs_np), jnp.asarray(labels_np)
  params = init_fn(jax.random.key(0), xs)
  n_params = count_leaves(params)
  if mode == "infer":
    forward = jax.jit(apply_fn)
    return (lambda: forward(params, xs).block_until_ready()), n_params

  opt = optax.adam(LEARNING_RATE, eps=ADAM_EPS)
  state = {"params": params, "opt": opt.init(params)}

  def train_step(params, opt_state, xs, labels):
    loss, grads = jax.value_and_grad(lambda p: jax_xent(apply_fn(p, xs), labels))(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  train_step = jax.jit(train_step, donate_argnums=(0, 1))

  def call():
    state["params"], state["opt"], loss = train_step(state["params"], state["opt"], xs, labels)
    jax.block_until_ready((state["params"], loss))

  return call, n_params


def build_jaxlstm(cfg: Config, mode: str, impl: str):
  """jaxlstm's stack with a Dense head, on the given ``impl``."""
  import jax
  import jax.numpy as jnp

  import jaxlstm

  def init_fn(key, xs):
    k_rnn, k_head = jax.random.split(key)
    stack = jaxlstm.stack_init(k_rnn, cfg.I, cfg.H, cfg.layers)
    w = jax.random.normal(k_head, (cfg.H, NUM_CLASSES), jnp.float32) / cfg.H ** 0.5
    return {"stack": stack, "head": {"w": w, "b": jnp.zeros((NUM_CLASSES,), jnp.float32)}}

  def apply_fn(params, xs):
    _, hs = jaxlstm.stack(params["stack"], xs, impl=impl)
    return hs[:, -1] @ params["head"]["w"] + params["head"]["b"]

  return jax_runner(init_fn, apply_fn, cfg, mode)


def build_jax_cudnn(cfg: Config, mode: str):
  """``jax.experimental.rnn.lstm``: all layers in one cuDNN call on its flat weights, then a Dense head."""
  import jax
  import jax.numpy as jnp
  from jax.experimental import rnn

  def init_fn(key, xs):
    k_rnn, k_head = jax.random.split(key)
    w = jax.random.normal(k_head, (cfg.H, NUM_CLASSES), jnp.float32) / cfg.H ** 0.5
    # cuDNN keeps two bias vectors per layer (b_ih, b_hh), like PyTorch: +4H params per layer.
    return {"rnn": rnn.init_lstm_weight(k_rnn, cfg.I, cfg.H, cfg.layers, False),
            "head": {"w": w, "b": jnp.zeros((NUM_CLASSES,), jnp.float32)}}

  def apply_fn(params, xs):
    h0 = jnp.zeros((cfg.layers, cfg.B, cfg.H), jnp.float32)
    seq = jnp.full((cfg.B,), cfg.T, jnp.int32)
    hs, _, _ = rnn.lstm(xs, h0, h0, params["rnn"], seq, input_size=cfg.I, hidden_size=cfg.H,
                        num_layers=cfg.layers, dropout=0.0, bidirectional=False)
    return hs[:, -1] @ params["head"]["w"] + params["head"]["b"]

  return jax_runner(init_fn, apply_fn, cfg, mode)


def build_flax(cfg: Config, mode: str):
  """Flax Linen: ``nn.RNN(nn.OptimizedLSTMCell(H))`` per layer, then ``nn.Dense(10)``."""
  import flax.linen as nn

  class Model(nn.Module):
    @nn.compact
    def __call__(self, xs):
      for _ in range(cfg.layers):
        xs = nn.RNN(nn.OptimizedLSTMCell(cfg.H))(xs)
      return nn.Dense(NUM_CLASSES)(xs[:, -1])

  model = Model()
  return jax_runner(lambda key, xs: model.init(key, xs), model.apply, cfg, mode)


def build_keras_model(cfg: Config):
  """The Keras model: ``LSTM(return_sequences=True)`` layers, a last ``LSTM``, ``Dense(10)``."""
  import keras
  inputs = keras.Input(shape=(cfg.T, cfg.I), batch_size=cfg.B)
  x = inputs
  for i in range(cfg.layers):
    x = keras.layers.LSTM(cfg.H, return_sequences=i < cfg.layers - 1)(x)
  model = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(x))
  return model


def build_keras(cfg: Config, mode: str):
  """Keras 3 (JAX backend) through ``train_on_batch`` / ``predict_on_batch``."""
  import keras
  xs, labels = make_data(cfg)
  model = build_keras_model(cfg)
  n_params = model.count_params()
  if mode == "infer":
    return (lambda: model.predict_on_batch(xs)), n_params
  model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE, epsilon=ADAM_EPS),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  # train_on_batch returns the loss as a Python float, so it blocks until the step is done.
  return (lambda: model.train_on_batch(xs, labels)), n_params


def build_keras_jit(cfg: Config, mode: str):
  """Keras 3 (JAX backend) through a jitted stateless step, as in Keras' custom-JAX-training guide."""
  import jax
  import jax.numpy as jnp
  import keras
  xs_np, labels_np = make_data(cfg)
  xs, labels = jnp.asarray(xs_np), jnp.asarray(labels_np)
  model = build_keras_model(cfg)
  n_params = model.count_params()
  trainable = [v.value for v in model.trainable_variables]
  non_trainable = [v.value for v in model.non_trainable_variables]
  if mode == "infer":
    forward = jax.jit(lambda tv, ntv, xs: model.stateless_call(tv, ntv, xs)[0])
    return (lambda: forward(trainable, non_trainable, xs).block_until_ready()), n_params

  optimizer = keras.optimizers.Adam(LEARNING_RATE, epsilon=ADAM_EPS)
  optimizer.build(model.trainable_variables)
  state = {"tv": trainable, "ntv": non_trainable, "opt": [v.value for v in optimizer.variables]}

  def loss_fn(tv, ntv, xs, labels):
    logits, ntv = model.stateless_call(tv, ntv, xs, training=True)
    return jax_xent(logits, labels), ntv

  def train_step(tv, ntv, opt_vars, xs, labels):
    (loss, ntv), grads = jax.value_and_grad(loss_fn, has_aux=True)(tv, ntv, xs, labels)
    tv, opt_vars = optimizer.stateless_apply(opt_vars, grads, tv)
    return tv, ntv, opt_vars, loss

  train_step = jax.jit(train_step, donate_argnums=(0, 1, 2))

  def call():
    state["tv"], state["ntv"], state["opt"], loss = train_step(state["tv"], state["ntv"], state["opt"], xs, labels)
    jax.block_until_ready((state["tv"], loss))

  return call, n_params


def build_torch(cfg: Config, mode: str, device: str = "cpu"):
  """PyTorch: ``nn.LSTM(num_layers=L, batch_first=True)`` + ``nn.Linear``, Adam; on CPU with 2 threads, or CUDA."""
  import torch
  torch.set_num_threads(TORCH_THREADS)
  # XLA's CPU backend flushes denormals to zero; PyTorch does not by default, and at M the gradients that
  # decay through 256 steps turn denormal and make its steps ~15x slower. Compare like with like.
  torch.set_flush_denormal(os.environ.get("BENCH_TORCH_DENORMALS") != "1")
  torch.manual_seed(0)
  dev = torch.device("cuda" if device == "gpu" else "cpu")
  # Each timed call must wait for the GPU, as block_until_ready does for JAX.
  sync = torch.cuda.synchronize if device == "gpu" else (lambda: None)
  xs_np, labels_np = make_data(cfg)
  xs, labels = torch.from_numpy(xs_np).to(dev), torch.from_numpy(labels_np).long().to(dev)
  lstm = torch.nn.LSTM(cfg.I, cfg.H, num_layers=cfg.layers, batch_first=True).to(dev)
  head = torch.nn.Linear(cfg.H, NUM_CLASSES).to(dev)
  modules = torch.nn.ModuleList([lstm, head])
  n_params = sum(p.numel() for p in modules.parameters())

  def forward():
    hs, _ = lstm(xs)
    return head(hs[:, -1])

  if mode == "infer":
    def infer():
      with torch.inference_mode():
        forward()
      sync()
    return infer, n_params

  optimizer = torch.optim.Adam(modules.parameters(), lr=LEARNING_RATE, eps=ADAM_EPS)
  loss_fn = torch.nn.CrossEntropyLoss()

  def call():
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(forward(), labels)
    loss.backward()
    optimizer.step()
    sync()

  return call, n_params


def build_peer(peer: str, cfg: Config, mode: str, device: str = "cpu"):
  """``(call, n_params)`` for one peer."""
  if peer == "jaxlstm-fused":
    return build_jaxlstm(cfg, mode, "fused")
  if peer == "jaxlstm-ref":
    return build_jaxlstm(cfg, mode, "reference")
  if peer == "jaxlstm-cudnn":
    return build_jaxlstm(cfg, mode, "cudnn")
  if peer == "jax-cudnn":
    return build_jax_cudnn(cfg, mode)
  if peer == "flax":
    return build_flax(cfg, mode)
  if peer == "keras":
    return build_keras(cfg, mode)
  if peer == "keras-jit":
    return build_keras_jit(cfg, mode)
  if peer == "torch":
    return build_torch(cfg, mode, device)
  raise ValueError(f"unknown peer {peer!r}")


def measure_ceiling(kind: str, steps: int, device: str = "cpu") -> list:
  """GFLOP/s samples of a square float32 matmul at default precision: jitted in JAX, or in PyTorch.

  ``CEILING_N`` on CPU (PyTorch with 2 threads), ``GPU_CEILING_N`` on a GPU.
  """
  n = GPU_CEILING_N if device == "gpu" else CEILING_N
  flops = 2.0 * n ** 3
  if kind == "jax":
    import jax
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    call = lambda: matmul(a, b).block_until_ready()
  else:
    import torch
    torch.set_num_threads(TORCH_THREADS)
    dev = "cuda" if device == "gpu" else "cpu"
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    sync = torch.cuda.synchronize if device == "gpu" else (lambda: None)

    def call():
      torch.matmul(a, b)
      sync()
  timing = time_calls(call, steps, warmup=2)
  return [flops / t / 1e9 for t in timing["times_s"]]


def run_worker(spec: dict) -> dict:
  """Runs the measurements described by ``spec`` in this process and returns their results.

  A peer's worker times each of ``spec["modes"]`` ("train", "infer") on one
  config; the ``ceiling`` worker times the JAX matmul, then the PyTorch one.
  """
  if spec["peer"] == "ceiling":
    device = spec.get("device", "cpu")
    out = {"status": "ok", "jax": measure_ceiling("jax", spec["steps"], device)}
    try:
      out["torch"] = measure_ceiling("torch", spec["steps"], device)
    except ImportError:
      pass
    return out
  cfg = Config(*spec["config"])
  try:
    __import__(PEER_LIBRARY[spec["peer"]])
    if spec["peer"] in ("jaxlstm-cudnn", "jax-cudnn") and not _cudnn_available():
      return {"status": "missing", "error": "needs a CUDA GPU (run with --device gpu)"}
  except ImportError as e:
    return {"status": "missing", "error": f"{PEER_LIBRARY[spec['peer']]} not installed ({e})"}
  out = {"status": "ok"}
  for mode in spec["modes"]:
    call, n_params = build_peer(spec["peer"], cfg, mode, spec.get("device", "cpu"))
    out[mode] = {"params": n_params, **time_calls(call, spec["steps"], spec["warmup"])}
  return out


def _cudnn_available() -> bool:
  from jaxlstm import cudnn
  return cudnn.available()


def worker_main(spec_json: str) -> None:
  """Entry point of ``--worker``: prints the result line; a crash prints its traceback and exits non-zero."""
  result = run_worker(json.loads(spec_json))
  print(RESULT_TAG + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------
# Driver: subprocesses, rounds, pooling.


def worker_env(omp_passive: bool, device: str = "cpu", keep_denormals: bool = False) -> dict:
  """Environment of a worker: Keras on JAX, JAX on CPU (or the GPU), quieter logs.

  With ``omp_passive``, ``OMP_WAIT_POLICY=PASSIVE``: PyTorch's OpenMP threads
  sleep instead of spinning at each barrier. On a machine shared with other
  jobs a spinning thread that gets descheduled stalls every parallel region
  (we saw 10-100x slower PyTorch steps at small shapes under load).
  """
  env = dict(os.environ)
  env["KERAS_BACKEND"] = "jax"
  if device == "gpu":
    env.setdefault("JAX_PLATFORMS", "cuda")
    # JAX would take 75% of the GPU's memory up front; workers run one at a time, but stay lean.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  else:
    env.setdefault("JAX_PLATFORMS", "cpu")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if omp_passive:
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  if keep_denormals:
    env["BENCH_TORCH_DENORMALS"] = "1"
  return env


def spawn(spec: dict, timeout: float, omp_passive: bool = True, keep_denormals: bool = False) -> dict:
  """Runs one worker subprocess; a crash, a timeout or a missing result line becomes an error result."""
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=worker_env(omp_passive, spec.get("device", "cpu"), keep_denormals))
  except subprocess.TimeoutExpired:
    return {"status": "error", "error": f"timed out after {timeout:.0f} s"}
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith(RESULT_TAG):
      return json.loads(line[len(RESULT_TAG):])
  lines = [l.strip() for l in proc.stderr.splitlines() if l.strip()]
  # The exception's own line, rather than a framework's closing remark after it.
  errors = [l for l in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", l)]
  tail = (errors or lines or ["no output"])[-1]
  return {"status": "error", "error": f"exit code {proc.returncode}: {tail[:300]}"}


def rotated(items: list, r: int) -> list:
  """``items`` rotated left by ``r``: round ``r`` starts with a different peer."""
  r %= len(items)
  return items[r:] + items[:r]


def run_rounds(name: str, cfg: Config, modes: list, peers: list, args, log) -> dict:
  """Runs every peer, then the matmul ceiling, for ``args.rounds`` rounds on one config; pools the results.

  Returns ``{peer: {"status", "error", mode: {"times_s", "first_s", "params"}}}``
  and ``{"ceiling": {"jax": [GFLOP/s...], "torch": [...]}}``.
  """
  rounds = args.rounds[name]
  steps_per_round = max(1, -(-args.steps[name] // rounds))
  pooled = {p: {"status": "ok", "error": None, **{m: {"times_s": [], "first_s": [], "faults": [], "params": None} for m in modes}}
            for p in peers}
  pooled["ceiling"] = {"status": "ok", "error": None, "jax": [], "torch": []}
  for r in range(rounds):
    for peer in rotated(peers, r) + ["ceiling"]:
      entry = pooled[peer]
      if entry["status"] != "ok":
        continue  # missing or crashed in an earlier round: don't retry
      spec = {"peer": peer, "config": list(cfg), "modes": modes, "steps": steps_per_round, "warmup": args.warmup,
              "device": args.device}
      t0 = time.perf_counter()
      res = spawn(spec, args.timeout, omp_passive=not args.omp_spin, keep_denormals=args.torch_denormals)
      tag = f"  [{name} round {r + 1}/{rounds}] {peer:14s}"
      if res["status"] != "ok":
        entry.update(status=res["status"], error=res["error"])
        log(f"{tag} {res['status'].upper()}: {res['error']}")
        continue
      if peer == "ceiling":
        for lib in ("jax", "torch"):
          entry[lib] += res.get(lib, [])
        log(f"{tag} matmul " + ", ".join(f"{lib} {statistics.median(res[lib]):.1f}" for lib in ("jax", "torch")
                                         if res.get(lib)) + " GFLOP/s")
        continue
      parts = []
      for mode in modes:
        m = res[mode]
        entry[mode]["times_s"] += m["times_s"]
        entry[mode]["first_s"].append(m["first_s"])
        entry[mode]["faults"].append(m["faults"])
        entry[mode]["params"] = m["params"]
        parts.append(f"{mode}: first {m['first_s']:.2f} s, median {1e3 * statistics.median(m['times_s']):.2f} ms")
      log(f"{tag} params {res[modes[0]]['params']:>9,d}; " + "; ".join(parts)
          + f"  ({time.perf_counter() - t0:.0f} s wall)")
  return pooled


def quartiles(xs: list) -> tuple:
  """(q1, median, q3) of a sample."""
  if len(xs) < 2:
    return xs[0], xs[0], xs[0]
  q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
  return q1, q2, q3


# --------------------------------------------------------------------------------------------------
# Report


def fmt_ms(seconds: float) -> str:
  ms = seconds * 1e3
  return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def job_table(name: str, cfg: Config, mode: str, pooled: dict, peers: list, rounds: int, device: str = "cpu") -> list:
  """Markdown lines of one config's table for one mode."""
  ceiling = statistics.median(pooled["ceiling"]["jax"] or [float("nan")])
  torch_ceiling = pooled["ceiling"]["torch"]
  expected = param_count(cfg)
  flops = step_flops(cfg, mode)
  ref = pooled.get(REFERENCE_PEER, {})
  ref_times = ref[mode]["times_s"] if ref.get("status") == "ok" else []
  ref_median = statistics.median(ref_times) if ref_times else None
  title = "training step (fwd + bwd + Adam)" if mode == "train" else "inference (forward only)"
  lines = [
      f"### {name} {mode}: {title} — B={cfg.B}, T={cfg.T}, in={cfg.I}, H={cfg.H}, layers={cfg.layers}, Dense({NUM_CLASSES})",
      "",
      f"Model: {expected:,d} parameters; {flops / 1e9:.2f} GFLOP per step; {rounds} round(s). "
      f"Matmul ceiling (jitted JAX {GPU_CEILING_N if device == 'gpu' else CEILING_N}² f32): "
      f"**{ceiling:.1f} GFLOP/s**"
      + (f" (PyTorch{'' if device == 'gpu' else f', {TORCH_THREADS} threads'}: "
         f"{statistics.median(torch_ceiling):.1f} GFLOP/s)" if torch_ceiling
         else "") + ".",
      "",
      "| peer | params | first step (s) | median (ms) | IQR (ms) | min–max (ms) | n | GFLOP/s | % of ceiling "
      f"| page faults / step | × {REFERENCE_PEER} time |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for peer in peers:
    if pooled[peer]["status"] != "ok":
      word = "skipped" if pooled[peer]["status"] == "missing" else "FAILED"
      lines.append(f"| {peer} | {word}: {pooled[peer]['error']} | | | | | | | | | |")
      continue
    e = pooled[peer][mode]
    q1, med, q3 = quartiles(e["times_s"])
    gflops = flops / med / 1e9
    diff = e["params"] - expected
    params = f"{e['params']:,d}" + (" ✓" if diff == 0 else f" ({diff:+,d})")
    firsts = "/".join(f"{f:.2f}" for f in e["first_s"])
    ratio = f"{med / ref_median:.2f}" if ref_median else "—"
    faults = f"{statistics.median(e['faults']):,.0f}" if e.get("faults") else "—"  # runs saved before the column
    lines.append(f"| {peer} | {params} | {firsts} | {fmt_ms(med)} | {fmt_ms(q1)}–{fmt_ms(q3)} | "
                 f"{fmt_ms(min(e['times_s']))}–{fmt_ms(max(e['times_s']))} | {len(e['times_s'])} | "
                 f"{gflops:.1f} | {100 * gflops / ceiling:.1f}% | {faults} | {ratio} |")
  return lines + [""]


def gpu_name() -> str:
  """The GPU's name, memory and driver from ``nvidia-smi``, or why they are unknown."""
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=60).stdout.strip()
  except (OSError, subprocess.TimeoutExpired) as e:
    return f"unknown ({e})"
  return out.replace("\n", "; ") or "unknown (nvidia-smi printed nothing)"


def machine_lines(device: str = "cpu") -> list:
  """Date, CPU (and GPU), cores, load and library versions."""
  cpu = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  versions = []
  for dist in ("jax", "jaxlib", "optax", "flax", "keras", "torch", "numpy"):
    try:
      versions.append(f"{dist} {importlib.metadata.version(dist)}")
    except importlib.metadata.PackageNotFoundError:
      versions.append(f"{dist} (not installed)")
  load = " ".join(f"{x:.2f}" for x in os.getloadavg())
  return [
      f"- Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
      *([f"- GPU: {gpu_name()}"] if device == "gpu" else []),
      f"- Machine: {cpu}, {os.cpu_count()} cores visible, Python {platform.python_version()}, "
      f"load average at start {load}",
      f"- Versions: {', '.join(versions)}",
  ]


def median_of(pooled: dict, peer: str, mode: str) -> float | None:
  """A peer's pooled median step time, or None if it did not run."""
  e = pooled.get(peer)
  times = e[mode]["times_s"] if e and e["status"] == "ok" else []
  return statistics.median(times) if times else None


def summary_table(jobs: list) -> list:
  """Markdown lines: every peer's median time over jaxlstm-fused's, one column per config and mode."""
  cols = [(job, mode) for job in jobs for mode in job["modes"]]
  lines = ["## Summary: median step time relative to jaxlstm-fused (> 1: jaxlstm-fused is faster)", "",
           "| peer | " + " | ".join(f"{job['name']} {mode}" for job, mode in cols) + " |",
           "|---|" + "---:|" * len(cols)]
  for peer in jobs[0]["peers"]:
    cells = []
    for job, mode in cols:
      ref, med = median_of(job["pooled"], REFERENCE_PEER, mode), median_of(job["pooled"], peer, mode)
      if peer == REFERENCE_PEER and med is not None:
        cells.append(f"1 ({fmt_ms(med)} ms)")
      elif med is None:
        cells.append(job["pooled"][peer]["status"])
      else:
        cells.append(f"{med / ref:.2f}" if ref else "—")
    lines.append(f"| {peer} | " + " | ".join(cells) + " |")
  return lines + [""]


GPU_NOTE = ("GPU run: every peer on the one GPU, each framework at its default float32 matmul precision "
            "(JAX's default lets XLA and cuDNN use TF32 on Ampere and newer cards; PyTorch's default keeps "
            "full float32 in matmuls). `jaxlstm-cudnn` is `jaxlstm.stack(..., impl=\"cudnn\")`, one cuDNN call "
            "per layer; `jax-cudnn` is `jax.experimental.rnn.lstm` with all layers in one call; both, like "
            "PyTorch, carry a second bias vector per layer in cuDNN's layout (zero and frozen in jaxlstm's "
            "case, trained in the others). Timed calls wait for the GPU (`block_until_ready`, "
            "`torch.cuda.synchronize`).")


def report(run: dict) -> str:
  """The whole Markdown report of a run (see :func:`main` for its fields)."""
  lines = ["# jaxlstm side-by-side benchmark", "", *run["header"],
           f"- Command: `{run['command']}`",
           f"- Wall time: {run['wall_min']:.1f} min; load average at end: {run['load_end']}",
           "",
           "How to read: each peer ran in its own subprocess, peers alternating (order rotated) over "
           "the rounds given per config; **median** and **IQR** pool the timed steps of all rounds "
           f"(`n` of them, after the first step and {run['warmup']} more warm-up step(s) of each round). "
           "**first step** is each round's first call: tracing and XLA compilation for the JAX peers. "
           "GFLOP/s counts the LSTM work (gate GEMMs `2·B·T·(I+H)·4H` per layer plus elementwise; "
           "training = 3× forward), and **% of ceiling** compares it with the jitted JAX matmul measured "
           "in the same rounds. **page faults / step** is the worker process's minor page faults per timed "
           "step (median over rounds): memory touched for the first time in that step. "
           f"**× {REFERENCE_PEER} time** is a peer's median over jaxlstm-fused's: "
           "above 1 means jaxlstm-fused is faster. `params` ✓ means the peer's parameter count equals the "
           "shared model's; PyTorch's LSTM has two bias vectors (`b_ih`, `b_hh`) where the others have one, "
           "hence its +4H per layer.",
           "",
           (GPU_NOTE if run.get("device") == "gpu" else
            "PyTorch runs with `torch.set_num_threads(2)` and "
            + ("`OMP_WAIT_POLICY` left alone (threads spin)." if run["omp_spin"] else
               "`OMP_WAIT_POLICY=PASSIVE` (on a loaded machine spinning OpenMP threads made small PyTorch steps "
               "10–100× slower; `--omp-spin` turns this off).") + " JAX uses XLA's default CPU thread pool. "
            + ("PyTorch keeps its default denormal handling (`--torch-denormals`)." if run.get("torch_denormals") else
               "PyTorch runs with `torch.set_flush_denormal(True)`, as XLA flushes denormals on CPU: without it, "
               "the gradients that decay through M's 256 steps turn denormal and its training step is ~15× "
               "slower (`--torch-denormals` keeps PyTorch's default).")),
           "",
           "Keras peer: `model.train_on_batch` / `model.predict_on_batch`, which Keras 3 compiles with "
           "`jax.jit` (the train function donates its state). `keras-jit`, if listed, is the same model "
           "through a hand-written jitted `stateless_call` + `optimizer.stateless_apply` step.",
           ""]
  lines += summary_table(run["jobs"])
  for job in run["jobs"]:
    for mode in job["modes"]:
      lines += job_table(job["name"], Config(*job["config"]), mode, job["pooled"], job["peers"], job["rounds"],
                         run.get("device", "cpu"))
  return "\n".join(lines)


def write_report(run: dict, out: str) -> None:
  """Prints the report and writes it to ``out`` (Markdown) and the raw run next to it (``.json``)."""
  text = report(run)
  print("\n" + text)
  if not out:
    return
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    f.write(text + "\n")
  with open(os.path.splitext(out)[0] + ".json", "w") as f:
    json.dump(run, f, indent=1)
  print(f"\nwrote {out} and {os.path.splitext(out)[0]}.json")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                 help="cpu (default), or gpu: JAX on CUDA, PyTorch on CUDA, cuDNN peers, more steps, config XL")
  p.add_argument("--configs", default=None, help="training configs, from S, M, L, XL (default S,M,L; GPU "
                 "S,M,L,XL); '' for none")
  p.add_argument("--infer-configs", default=None, help="inference configs (default S,M; GPU S,M,L,XL); '' for none")
  p.add_argument("--peers", default=None, help=f"comma list from {', '.join(ALL_PEERS)} (default "
                 f"{','.join(DEFAULT_PEERS)}; GPU {','.join(DEFAULT_GPU_PEERS)})")
  p.add_argument("--steps", default="", help="timed steps per peer, pooled over the rounds: N for every config "
                 "or per config, e.g. S=20,L=6 (default " + per_config_text(DEFAULT_STEPS) + ")")
  p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first, in each round")
  p.add_argument("--rounds", default="", help="rounds of the whole peer list: N, or per config as for "
                 "--steps (default " + per_config_text(DEFAULT_ROUNDS) + ")")
  p.add_argument("--timeout", type=float, default=900, help="seconds before a worker is killed")
  p.add_argument("--torch-denormals", action="store_true",
                 help="leave PyTorch's denormal handling alone (by default it flushes them to zero, as XLA does)")
  p.add_argument("--omp-spin", action="store_true",
                 help="leave OMP_WAIT_POLICY alone (by default workers get PASSIVE, see worker_env)")
  p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md"),
                 help="Markdown report (default bench/results.md)")
  p.add_argument("--quick", action="store_true", help="tiny shapes, 2 timed steps, 1 round: a smoke run")
  p.add_argument("--render", metavar="JSON", help="rewrite the report of a saved run (its .json) to --out")
  p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  gpu = args.device == "gpu"
  if args.configs is None:
    args.configs = "S,M,L,XL" if gpu else "S,M,L"
  if args.infer_configs is None:
    args.infer_configs = "S,M,L,XL" if gpu else "S,M"
  if args.peers is None:
    args.peers = ",".join(DEFAULT_GPU_PEERS if gpu else DEFAULT_PEERS)
  if args.quick:
    args.configs, args.infer_configs = "Q", "Q"
    args.warmup = 0
  args.steps = per_config(args.steps, GPU_STEPS if gpu else DEFAULT_STEPS)
  args.rounds = per_config(args.rounds, GPU_ROUNDS if gpu else DEFAULT_ROUNDS)
  return args


def per_config_text(table: dict) -> str:
  return ",".join(f"{k}={v}" for k, v in table.items() if k != "Q")


def per_config(text: str, defaults: dict) -> dict:
  """Parses ``N`` (every config) or ``S=20,L=6`` (those configs) over ``defaults``."""
  out = dict(defaults)
  text = text.strip()
  if text.isdigit():
    return {k: int(text) for k in out}
  for item in filter(None, (t.strip() for t in text.split(","))):
    name, _, value = item.partition("=")
    if name not in CONFIGS or not value.isdigit() or int(value) < 1:
      raise SystemExit(f"expected N or CONFIG=N,...; got {text!r}")
    out[name] = int(value)
  return out


def split_list(text: str, allowed) -> list:
  items = [s.strip() for s in text.split(",") if s.strip()]
  bad = [s for s in items if s not in allowed]
  if bad:
    raise SystemExit(f"unknown {bad}; choose from {sorted(allowed)}")
  return items


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.worker:
    return worker_main(args.worker)
  if args.render:
    with open(args.render) as f:
      return write_report(json.load(f), args.out)
  started = time.perf_counter()
  command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])
  peers = split_list(args.peers, ALL_PEERS)
  train, infer = split_list(args.configs, CONFIGS), split_list(args.infer_configs, CONFIGS)
  # One job per config; a peer's worker runs its training and inference measurements in turn.
  jobs = [(c, [m for m, cs in (("train", train), ("infer", infer)) if c in cs]) for c in CONFIGS if c in train + infer]
  header = machine_lines(args.device)
  print("\n".join(header), flush=True)
  log = lambda msg: print(msg, flush=True)
  results = []
  for name, modes in jobs:
    cfg = CONFIGS[name]
    log(f"{name} ({'+'.join(modes)}): {cfg} — {param_count(cfg):,d} params")
    results.append({"name": name, "config": list(cfg), "modes": modes, "peers": peers, "rounds": args.rounds[name],
                    "pooled": run_rounds(name, cfg, modes, peers, args, log)})
    run = {"header": header, "command": command, "device": args.device, "wall_min": (time.perf_counter() - started) / 60,
           "load_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
           "warmup": args.warmup, "omp_spin": args.omp_spin, "torch_denormals": args.torch_denormals,
           "jobs": results}
    if args.out:  # the configs so far, in case the run is cut short (render it with --render)
      with open(os.path.splitext(args.out)[0] + ".partial.json", "w") as f:
        json.dump(run, f)
  write_report(run, args.out)
  if args.out and os.path.exists(os.path.splitext(args.out)[0] + ".partial.json"):
    os.remove(os.path.splitext(args.out)[0] + ".partial.json")


if __name__ == "__main__":
  main()
