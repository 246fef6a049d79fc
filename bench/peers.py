"""The peers: one builder per framework, each returning a blocking step callable and its parameter count.

Every peer trains the same model: a stack of LSTM layers (``--cell``: GRU layers with PyTorch's semantics on
every side, ``b_hn`` inside the reset product; LayerNorm LSTMs, jaxlstm's only; LSTMs projected to ``P = H // 2``,
PyTorch's ``proj_size``), a Dense(10) head on
the last time step's output, softmax cross-entropy against random integer
labels, Adam with learning rate 1e-3. A training step is forward + backward +
optimizer update; an inference step is the forward pass alone. Frameworks are
imported inside the builders, so that the driver loads none of them and each
worker only its own peer's.

Peers (``--peers``):
  jaxlstm-fused  ``jaxlstm.stack(..., impl="fused")`` (GRU: ``"fused_gru"``), whole step in one ``jax.jit``,
                 optax.adam
  jaxlstm-ref    the same with ``impl="reference"`` (``lax.scan`` over the cell)
  jaxlstm-native the same with ``impl="native"`` (GRU: ``"native_gru"``; the C++ loops, CPU float32); not run by
                 default
  flax           Linen ``nn.RNN(nn.OptimizedLSTMCell(H))`` (GRU: ``nn.GRUCell``) stack, optax.adam, jitted
  keras          Keras 3 on JAX, ``keras.layers.LSTM`` (``GRU``) stack, ``model.train_on_batch``
                 / ``model.predict_on_batch`` (Keras compiles these with ``jax.jit``)
  keras-jit      the same Keras model through a hand-written jitted stateless step
                 (``stateless_call`` + ``optimizer.stateless_apply``); not run by default
  torch          ``torch.nn.LSTM(num_layers=L)`` (``nn.GRU``) + ``Linear``, ``torch.optim.Adam``, 2 threads (or
                 CUDA)
  jaxlstm-cudnn  ``jaxlstm.stack(..., impl="cudnn")`` (GPU only)
  jaxlstm-pallas ``jaxlstm.stack(..., impl="pallas")`` (GRU: ``"pallas_gru"``), each layer's time loop in one
                 Pallas kernel (GPU only)
  jax-cudnn      ``jax.experimental.rnn.lstm``, all layers in one cuDNN call (GPU only)

``jaxlstm-cudnn`` and ``jax-cudnn`` run plain LSTMs only, ``jaxlstm-native`` plain and projected LSTMs, Flax and
Keras plain LSTMs and GRUs, PyTorch all but the LayerNorm LSTM; ``jaxlstm-pallas`` plain LSTMs and GRUs too
(:attr:`Peer.cells`).

Precision (``--precision``, GPU): every worker first calls :func:`set_precision`, so that all peers compute at
one precision: ``highest`` (full float32 matmuls on both sides: JAX's ``jax_default_matmul_precision="highest"``,
PyTorch's ``allow_tf32 = False`` for cuBLAS and cuDNN), ``tf32`` (TF32 inputs, float32 sums, on both sides),
``bf16`` (bfloat16 weights and inputs, float32 sums; the cuDNN peers through JAX take float32 only and are
skipped), or ``native``, each framework at its own defaults, which on a GPU mixes precisions (JAX's default
float32 matmul uses TF32 there; PyTorch's cuBLAS default does not).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

from configs import (
  ADAM_EPS,
  CEILING_N,
  CELLS,
  GPU_CEILING_N,
  LEARNING_RATE,
  NUM_CLASSES,
  Config,
  out_size,
)

# Every other peer's time is reported relative to this one's.
# "jaxlstm" is the default path (impl="auto"), what a user who calls jaxlstm.stack gets.
REFERENCE_PEER = "jaxlstm"
DEFAULT_PEERS = ("jaxlstm", "jaxlstm-fused", "jaxlstm-ref", "flax", "keras", "torch")
DEFAULT_GPU_PEERS = (
  "jaxlstm",
  "jaxlstm-fused",
  "jaxlstm-pallas",
  "jaxlstm-ref",
  "jaxlstm-cudnn",
  "jax-cudnn",
  "flax",
  "torch",
)
PRECISIONS = ("native", "highest", "tf32", "bf16")
PRECISION = ["native"]  # set once per worker by set_precision
CELL = ["lstm"]  # set once per worker by set_cell


def set_cell(cell: str) -> None:
  """Makes this worker's peers build ``cell`` layers (one of :data:`configs.CELLS`)."""
  if cell not in CELLS:
    raise ValueError(f"cell must be one of {CELLS}; got {cell!r}")
  CELL[0] = cell


def set_precision(precision: str) -> None:
  """Puts this worker's frameworks at ``precision`` (see the module docstring); ``native`` changes nothing."""
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
  PRECISION[0] = precision
  if precision == "native":
    return
  import jax

  # bf16 keeps float32 matmuls (the head, the optimizer's) at full precision; only the weights are 16-bit.
  jax.config.update("jax_default_matmul_precision", "tensorfloat32" if precision == "tf32" else "highest")
  try:
    import torch
  except ImportError:
    return
  torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
  torch.backends.cudnn.allow_tf32 = precision == "tf32"


def bf16() -> bool:
  return PRECISION[0] == "bf16"


def make_data(cfg: Config, seed: int = 0):
  """Random inputs ``(B, T, I)`` float32 and labels ``(B,)`` int32, as NumPy arrays."""
  import numpy as np

  rng = np.random.default_rng(seed)
  xs = rng.standard_normal((cfg.B, cfg.T, cfg.I)).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, size=(cfg.B,)).astype(np.int32)
  return xs, labels


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

  dtype = jnp.bfloat16 if bf16() else jnp.float32
  cell = CELL[0]
  if cell == "gru":  # the GRU's kernels of the same kind
    impl = {"fused": "fused_gru", "pallas": "pallas_gru", "native": "native_gru"}.get(impl, impl)
  P = out_size(cfg, cell)
  options = {"layernorm": {"layer_norm": True}, "proj": {"proj_size": P}}.get(cell, {})

  def init_fn(key, xs):
    k_rnn, k_head = jax.random.split(key)
    name = "gru" if cell == "gru" else "lstm"
    stack = jaxlstm.stack_init(k_rnn, cfg.I, cfg.H, cfg.layers, cell=name, dtype=dtype, **options)
    w = jax.random.normal(k_head, (P, NUM_CLASSES), jnp.float32) / P**0.5
    return {"stack": stack, "head": {"w": w, "b": jnp.zeros((NUM_CLASSES,), jnp.float32)}}

  def apply_fn(params, xs):
    _, hs = jaxlstm.stack(params["stack"], xs.astype(dtype), impl=impl)
    return hs[:, -1].astype(jnp.float32) @ params["head"]["w"] + params["head"]["b"]

  return jax_runner(init_fn, apply_fn, cfg, mode)


def build_jax_cudnn(cfg: Config, mode: str):
  """``jax.experimental.rnn.lstm``: all layers in one cuDNN call on its flat weights, then a Dense head."""
  import jax
  import jax.numpy as jnp
  from jax.experimental import rnn

  def init_fn(key, xs):
    k_rnn, k_head = jax.random.split(key)
    w = jax.random.normal(k_head, (cfg.H, NUM_CLASSES), jnp.float32) / cfg.H**0.5
    # cuDNN keeps two bias vectors per layer (b_ih, b_hh), like PyTorch: +4H params per layer.
    return {
      "rnn": rnn.init_lstm_weight(k_rnn, cfg.I, cfg.H, cfg.layers, False),
      "head": {"w": w, "b": jnp.zeros((NUM_CLASSES,), jnp.float32)},
    }

  def apply_fn(params, xs):
    h0 = jnp.zeros((cfg.layers, cfg.B, cfg.H), jnp.float32)
    seq = jnp.full((cfg.B,), cfg.T, jnp.int32)
    hs, _, _ = rnn.lstm(
      xs,
      h0,
      h0,
      params["rnn"],
      seq,
      input_size=cfg.I,
      hidden_size=cfg.H,
      num_layers=cfg.layers,
      dropout=0.0,
      bidirectional=False,
    )
    return hs[:, -1] @ params["head"]["w"] + params["head"]["b"]

  return jax_runner(init_fn, apply_fn, cfg, mode)


def build_flax(cfg: Config, mode: str):
  """Flax Linen: ``nn.RNN(nn.OptimizedLSTMCell(H))`` (or ``nn.GRUCell(H)``) per layer, then ``nn.Dense(10)``."""
  import flax.linen as nn
  import jax.numpy as jnp

  # Flax's mixed precision: bfloat16 computation on float32 params (param_dtype stays float32).
  dtype = jnp.bfloat16 if bf16() else None
  Cell = nn.GRUCell if CELL[0] == "gru" else nn.OptimizedLSTMCell

  class Model(nn.Module):
    @nn.compact
    def __call__(self, xs):
      for _ in range(cfg.layers):
        xs = nn.RNN(Cell(cfg.H, dtype=dtype))(xs)
      return nn.Dense(NUM_CLASSES)(xs[:, -1])

  model = Model()
  return jax_runner(lambda key, xs: model.init(key, xs), model.apply, cfg, mode)


def build_keras_model(cfg: Config):
  """The Keras model: ``LSTM(return_sequences=True)`` layers (or ``GRU``), a last ``LSTM``, ``Dense(10)``."""
  import keras

  # keras.layers.GRU's default reset_after=True is PyTorch's GRU (the reset gate after the recurrent GEMM).
  Layer = keras.layers.GRU if CELL[0] == "gru" else keras.layers.LSTM
  inputs = keras.Input(shape=(cfg.T, cfg.I), batch_size=cfg.B)
  x = inputs
  for i in range(cfg.layers):
    x = Layer(cfg.H, return_sequences=i < cfg.layers - 1)(x)
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
  model.compile(
    optimizer=keras.optimizers.Adam(LEARNING_RATE, epsilon=ADAM_EPS),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
  )
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
  """PyTorch: ``nn.LSTM(num_layers=L, batch_first=True)`` (or ``nn.GRU``) + ``nn.Linear``, Adam; on CPU at its
  defaults, or CUDA."""
  import torch

  # XLA's CPU backend flushes denormals to zero; PyTorch does not by default, and at M the gradients that
  # decay through 256 steps turn denormal and make its steps ~15x slower. Compare like with like.
  torch.set_flush_denormal(os.environ.get("BENCH_TORCH_DENORMALS") != "1")
  torch.manual_seed(0)
  dev = torch.device("cuda" if device == "gpu" else "cpu")
  # Each timed call must wait for the GPU, as block_until_ready does for JAX.
  sync = torch.cuda.synchronize if device == "gpu" else (lambda: None)
  xs_np, labels_np = make_data(cfg)
  xs, labels = torch.from_numpy(xs_np).to(dev), torch.from_numpy(labels_np).long().to(dev)
  if CELL[0] == "gru":
    lstm = torch.nn.GRU(cfg.I, cfg.H, num_layers=cfg.layers, batch_first=True)
  else:  # proj_size=0 is a plain LSTM
    proj = out_size(cfg, CELL[0]) if CELL[0] == "proj" else 0
    lstm = torch.nn.LSTM(cfg.I, cfg.H, num_layers=cfg.layers, batch_first=True, proj_size=proj)
  lstm = lstm.to(dev)
  if bf16():  # bfloat16 weights and inputs; cuDNN sums in float32
    lstm, xs = lstm.to(torch.bfloat16), xs.to(torch.bfloat16)
  head = torch.nn.Linear(out_size(cfg, CELL[0]), NUM_CLASSES).to(dev)
  modules = torch.nn.ModuleList([lstm, head])
  n_params = sum(p.numel() for p in modules.parameters())

  def forward():
    hs, _ = lstm(xs)
    return head(hs[:, -1].float())

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


def cudnn_available() -> bool:
  """Whether the cuDNN peers can run here: a CUDA backend with jaxlib's GPU RNN kernels."""
  from jaxlstm.kernels import cudnn

  return cudnn.available()


class Peer(NamedTuple):
  """How a worker builds one peer."""

  library: str  # imported first: if it is missing, the peer is skipped
  build: Callable  # (cfg, mode, device) -> (call, n_params)
  needs_cuda: bool = False
  cells: tuple = CELLS  # the cells it builds
  # Environment of the worker process beyond the defaults: only for a labelled, tuned variant of a peer,
  # never for the headline rows, where every peer runs as its users run it.
  env: tuple = ()


PLAIN = ("lstm", "gru")  # the plain LSTM and the GRU, which every framework has
TORCH_CELLS = ("lstm", "gru", "proj")  # PyTorch has proj_size, no LayerNorm LSTM
MALLOC_TUNED = (
  ("MALLOC_ARENA_MAX", "1"),
  ("MALLOC_MMAP_THRESHOLD_", str(1 << 30)),
  ("MALLOC_TRIM_THRESHOLD_", str(2 << 30)),
)

PEERS = {
  "jaxlstm": Peer("jaxlstm", lambda cfg, mode, device: build_jaxlstm(cfg, mode, "auto")),
  "jaxlstm-fused": Peer("jaxlstm", lambda cfg, mode, device: build_jaxlstm(cfg, mode, "fused")),
  "jaxlstm-ref": Peer("jaxlstm", lambda cfg, mode, device: build_jaxlstm(cfg, mode, "reference")),
  "jaxlstm-native": Peer(
    "jaxlstm", lambda cfg, mode, device: build_jaxlstm(cfg, mode, "native"), cells=("lstm", "proj")
  ),
  "jaxlstm-cudnn": Peer(
    "jaxlstm", lambda cfg, mode, device: build_jaxlstm(cfg, mode, "cudnn"), needs_cuda=True, cells=("lstm",)
  ),
  "jaxlstm-pallas": Peer(
    "jaxlstm", lambda cfg, mode, device: build_jaxlstm(cfg, mode, "pallas"), needs_cuda=True, cells=PLAIN
  ),
  "jax-cudnn": Peer(
    "jax.experimental.rnn", lambda cfg, mode, device: build_jax_cudnn(cfg, mode), needs_cuda=True, cells=("lstm",)
  ),
  "flax": Peer("flax", lambda cfg, mode, device: build_flax(cfg, mode), cells=PLAIN),
  "keras": Peer("keras", lambda cfg, mode, device: build_keras(cfg, mode), cells=PLAIN),
  "keras-jit": Peer("keras", lambda cfg, mode, device: build_keras_jit(cfg, mode), cells=PLAIN),
  "torch": Peer("torch", build_torch, cells=TORCH_CELLS),
  # Tuned, not a default: PyTorch's OpenMP threads sleep at barriers instead of spinning, which helps on a machine
  # shared with other jobs and costs on an idle one.
  "torch-passive": Peer("torch", build_torch, env=(("OMP_WAIT_POLICY", "PASSIVE"),), cells=TORCH_CELLS),
  # Tuned, not a default: glibc's malloc with one arena and no mmap below 1 GiB, so that the large buffers a step
  # allocates afresh come back from the heap instead of as new pages (each faults on first touch). Set through
  # glibc's environment variables, as a user would, for either library.
  "jaxlstm-malloc": Peer("jaxlstm", lambda cfg, mode, device: build_jaxlstm(cfg, mode, "auto"), env=MALLOC_TUNED),
  "torch-malloc": Peer("torch", build_torch, env=MALLOC_TUNED, cells=TORCH_CELLS),
}
ALL_PEERS = tuple(PEERS)


def build_matmul(kind: str, device: str = "cpu"):
  """A blocking square float32 matmul at default precision, jitted in JAX or in PyTorch, and its FLOPs.

  ``CEILING_N`` on CPU (PyTorch with 2 threads), ``GPU_CEILING_N`` on a GPU.
  """
  n = GPU_CEILING_N if device == "gpu" else CEILING_N
  flops = 2.0 * n**3
  if kind == "jax":
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    return (lambda: matmul(a, b).block_until_ready()), flops
  import torch

  dev = "cuda" if device == "gpu" else "cpu"
  a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
  sync = torch.cuda.synchronize if device == "gpu" else (lambda: None)

  def call():
    torch.matmul(a, b)
    sync()

  return call, flops
