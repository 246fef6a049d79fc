"""The cuDNN LSTM layer: jaxlstm params through ``jax.experimental.rnn`` on CUDA GPUs.

``impl="cudnn"`` runs a plain LSTM layer as one cuDNN call (forward and
backward), with the same contract as the other paths: outputs zero past a
row's length, final state at each row's last valid step, ``reverse`` within
each row's length, any leading batch axes, time-major or not.

cuDNN's flat weight layout is PyTorch's: for each layer ``W_ih (4H, I)``,
``W_hh (4H, H)``, then the biases ``b_ih (4H,)`` and ``b_hh (4H,)``, gates in
the order i, f, g, o, which is also jaxlstm's order. jaxlstm's single bias goes
into ``b_ih``; ``b_hh`` is zero. :func:`pack_weights` builds the flat vector
inside the jitted function, so gradients flow back to the usual
:class:`~jaxlstm.LSTMParams`.

Limits: only on a CUDA GPU backend; plain LSTMs (no peepholes, layer norm or
projection) in float32; ``lengths`` but not ``mask`` or ``resets``;
batch-major and forward in time only, so no bidirectional stacks (see below);
no ``vmap`` (the cuDNN primitive has no batching rule).

Why no ``reverse`` or ``time_major``: on an H200 with jax 0.11.2, those calls
(which transpose or flip the input before the kernel) gave wrong outputs and
gradients, while batch-major forward calls matched the reference scan to
float32 rounding, lengths included. jaxlib's cuDNN custom call states no
operand layouts, so XLA may hand it a transposed array as a mere relabelled
layout. The arrays around the call are now pinned to row-major layouts
(:func:`jax.experimental.layout.with_layout_constraint`), which should cure
that, but until a GPU run of ``tests/test_cudnn.py`` confirms it these calls
are refused rather than risked. cuDNN follows JAX's
matmul precision: under the default it may use TF32 on Ampere and newer GPUs,
as XLA's own GEMMs do; ``jax.default_matmul_precision("highest")`` turns that
off.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlstm._src.cells.lstm import LSTMParams, LSTMState
from jaxlstm._src.kernels.registry import Kernel, LayerCall


def available() -> bool:
  """Whether cuDNN LSTMs can run here: a CUDA backend and jaxlib's GPU RNN kernels.

  Example:
    >>> from jaxlstm.kernels import cudnn
    >>> impl = "cudnn" if cudnn.available() else "fused"  # cuDNN where it runs, else the fused kernel
    >>> impl in jaxlstm.kernel_names()
    True
  """
  try:
    from jax.experimental import rnn
  except ImportError:
    return False
  return getattr(rnn, "gpu_rnn", None) is not None and jax.default_backend() == "gpu"


def why_not(call: LayerCall) -> str | None:
  """Why ``impl="cudnn"`` cannot run ``call``, or ``None`` if it can.

  Example:
    >>> from jaxlstm.kernels import cudnn
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5, dtype=jnp.bfloat16)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("lstm"), params=params, lengths=True, mask=False,
    ...                          resets=False, reverse=False, time_major=False, remat=None)
    >>> cudnn.why_not(call)
    'it runs float32 params only; got bfloat16'
  """
  if call.cell.name != "lstm":
    return f"it runs LSTM layers only, not {call.cell.name}"
  params = call.params
  if params.peephole is not None or params.layer_norm is not None or params.w_proj is not None:
    return "it runs plain LSTMs only (no peephole, layer_norm or proj_size)"
  if params.w_x.dtype != jnp.float32:
    return f"it runs float32 params only; got {params.w_x.dtype}"
  if call.mask or call.resets:
    return "it takes lengths but not mask or resets"
  if call.remat is not None:
    return "remat applies to impl='fused' only"
  if call.reverse or call.time_major:
    return (
      "it runs batch-major layers forward in time only (not reverse, time_major or bidirectional "
      "stacks), see jaxlstm.kernels.cudnn; use impl='fused'"
    )
  if not available():
    return f"it needs a CUDA GPU backend; JAX's default backend is {jax.default_backend()!r}"
  return None


def pack_weights(params: LSTMParams) -> jax.Array:
  """cuDNN's flat weights ``(4H*I + 4H*H + 8H,)`` of one unidirectional layer.

  Example:
    >>> from jaxlstm.kernels import cudnn
    >>> cudnn.pack_weights(jaxlstm.lstm_init(jax.random.key(0), 3, 5)).shape  # 60 + 100 + 40
    (200,)
  """
  H4 = params.b.shape[-1]
  return jnp.concatenate(
    [params.w_x.T.reshape(-1), params.w_h.T.reshape(-1), params.b, jnp.zeros((H4,), params.b.dtype)]
  )


def run(
  params: LSTMParams, xs: jax.Array, state: LSTMState, valid=None, resets=None, *, lengths=None, unroll=None, remat=None
) -> tuple[LSTMState, jax.Array]:
  """The kernel's core: one plain LSTM layer as one cuDNN call, on time-major ``xs (T, B, I)``.

  Args:
    params: float32 :class:`~jaxlstm.LSTMParams` without peepholes, layer norm
      or projection.
    xs: inputs ``(T, B, I)``.
    state: :class:`~jaxlstm.LSTMState` with leaves ``(B, H)``.
    valid: unused; cuDNN takes the lengths.
    resets, unroll, remat: unused (see :func:`why_not`).
    lengths: ``(B,)`` int32 lengths in ``[0, T]``, or ``None`` for full rows.

  Returns:
    ``(final_state, hs)`` with ``hs (T, B, H)``.

  Example:
    It runs through :func:`jaxlstm.lstm` with ``impl="cudnn"``, on a CUDA GPU only; elsewhere this example
    runs the same call on the reference kernel.

    >>> from jaxlstm.kernels import cudnn
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> impl = "cudnn" if cudnn.available() else "reference"
    >>> state, hs = jaxlstm.lstm(params, jnp.ones((2, 7, 3)), lengths=jnp.array([7, 4]), impl=impl)
    >>> hs.shape, bool((hs[1, 4:] == 0).all())
    ((2, 7, 5), True)
  """
  del valid, resets, unroll, remat
  from jax.experimental import rnn
  from jax.experimental.layout import Layout, with_layout_constraint

  def row_major(x):  # see the module docstring: the custom call states no layouts of its own
    return with_layout_constraint(x, Layout(tuple(range(x.ndim))))

  T, B, I = xs.shape
  H = params.hidden_size
  x_bf = row_major(jnp.swapaxes(xs, 0, 1))  # cuDNN takes batch-first (B, T, I)
  h0, c0 = row_major(state.h[None]), row_major(state.c[None])
  seq = jnp.full((B,), T, jnp.int32) if lengths is None else lengths.astype(jnp.int32)
  # cuDNN needs lengths >= 1: run empty rows for one step, then give them back their initial state.
  empty = seq == 0
  y, h, c = rnn.lstm(
    x_bf,
    h0,
    c0,
    pack_weights(params),
    jnp.maximum(seq, 1),
    input_size=I,
    hidden_size=H,
    num_layers=1,
    dropout=0.0,
    bidirectional=False,
  )
  # Pinning the outputs pins their cotangents too, which the backward custom call reads.
  y, h, c = row_major(y), row_major(h), row_major(c)
  h = jnp.where(empty[:, None], state.h, h[0])
  c = jnp.where(empty[:, None], state.c, c[0])
  return LSTMState(h, c), y.swapaxes(0, 1)


KERNEL = Kernel(name="cudnn", why_not=why_not, run=run, rank=50)
