"""A recurrent stack with a dense head, and the losses of each task kind.

This is the model behind the ``jaxlstm`` command: ``stack`` over the inputs,
then a linear readout of the last valid step (one output per sequence) or of
every step (one output per step).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlstm._src.cells.registry import cell_names, get_cell
from jaxlstm._src.initial_state import broadcast_state, initial_state_init
from jaxlstm._src.initializers import glorot_uniform
from jaxlstm._src.stack import Bidirectional, stack, stack_init

# Named variants of the command line's --cell beyond the registered cells' own names.
VARIANTS: dict[str, dict[str, Any]] = {
  "peephole": {"cell": "lstm", "peephole": True},
  "layernorm": {"cell": "lstm", "layer_norm": True},
  "rnn-relu": {"cell": "rnn", "activation": "relu"},
}
KINDS = ("classify", "regress", "seq_classify", "lm")


class Dense(NamedTuple):
  """A linear readout ``y = x @ w + b``.

  Attributes:
    w: ``(F, O)`` weights, from the stack's ``F`` output features to ``O`` outputs.
    b: ``(O,)`` bias.
  """

  w: jax.Array  # (F, O)
  b: jax.Array  # (O,)


class SequenceModel(NamedTuple):
  """A recurrent stack and its dense head: the params of :func:`model_apply`.

  Attributes:
    rnn: the stack's params, the tuple of :func:`jaxlstm.stack_init`.
    head: the :class:`Dense` readout.
    h0: the learned initial state of :func:`jaxlstm.initial_state_init` (one state per layer, leaves ``(F,)``),
      or ``None`` for the zero state. A field that holds ``None`` holds no arrays, so models and checkpoints
      made before the field existed still load.

  Example:
    >>> from jaxlstm.models import model_init
    >>> model = model_init(jax.random.key(0), 3, 2, hidden=5, layers=2, cell="gru")
    >>> len(model.rnn), model.head.w.shape, model.head.b.shape
    (2, (5, 2), (2,))
  """

  rnn: tuple  # stack params from stack_init
  head: Dense
  h0: tuple | None = None  # per layer, the initial state without batch axes: leaves (F,)


def cell_presets() -> dict[str, dict]:
  """The command line's cell names, each mapped to its :func:`jaxlstm.stack_init` options.

  Every registered cell under its own name, plus the :data:`VARIANTS`.

  Example:
    >>> from jaxlstm.models import cell_presets
    >>> presets = cell_presets()
    >>> presets["gru"], presets["rnn-relu"]
    ({'cell': 'gru'}, {'cell': 'rnn', 'activation': 'relu'})
  """
  return {**{name: {"cell": name} for name in cell_names()}, **VARIANTS}


def model_init(
  key: jax.Array,
  input_size: int,
  num_outputs: int,
  *,
  hidden: int = 128,
  layers: int = 1,
  cell: str = "lstm",
  bidirectional: bool = False,
  forget_bias: float = 1.0,
  activation: str | None = None,
  learn_initial_state: bool = False,
) -> SequenceModel:
  """Initializes a stack of ``layers`` recurrent layers and a dense head.

  Args:
    key: PRNG key.
    input_size: ``I``.
    num_outputs: ``O``, classes or regression outputs.
    hidden: ``H`` of each layer.
    layers: number of recurrent layers.
    cell: a name from :func:`cell_presets`: a registered cell (``lstm``,
      ``gru``, ``rnn``, ...) or a variant (``peephole``, ``layernorm``,
      ``rnn-relu``).
    bidirectional: bidirectional layers, merged by concatenation.
    forget_bias: initial forget-gate bias of LSTM cells.
    activation: for ``rnn`` cells, ``"tanh"`` or ``"relu"``; stored in the params.
    learn_initial_state: give the model a trainable initial state, ``h0``, zero at first; else it
      starts from zeros.

  Returns:
    :class:`SequenceModel` whose head is ``(H, O)`` (``(2H, O)`` if bidirectional).

  Raises:
    ValueError: for an unknown ``cell``, a cell whose steps have spatial axes (the ConvLSTMs: this model
      reads flat ``(B, T, I)`` sequences), or an ``activation`` that the cell does not take or contradicts.

  Example:
    >>> from jaxlstm.models import model_init
    >>> model = model_init(jax.random.key(0), 3, 4, hidden=5, cell="peephole", bidirectional=True)
    >>> model.rnn[0].forward.peephole.shape, model.head.w.shape
    ((3, 5), (10, 4))
    >>> model_init(jax.random.key(0), 3, 4, hidden=5, learn_initial_state=True).h0[0].c.shape
    (5,)
  """
  presets = cell_presets()
  if cell not in presets:
    raise ValueError(f"cell must be one of {sorted(presets)}; got {cell!r}")
  options = dict(presets[cell])
  record = get_cell(options["cell"])
  if record.feature_axes != 1:
    raise ValueError(
      f"cell {cell!r} reads sequences of feature maps, (B, T, *spatial, C), but this model (the "
      f"command line's) reads flat (B, T, I) sequences, so it cannot use it; run {record.name} "
      f"layers with jaxlstm.stack or the Flax modules on spatial data instead"
    )
  if options["cell"] == "lstm":
    options["forget_bias"] = forget_bias
  if activation is not None:
    if options["cell"] != "rnn":
      raise ValueError(f"activation applies to rnn cells only; got activation={activation!r} with cell={cell!r}")
    if options.setdefault("activation", activation) != activation:
      raise ValueError(f"cell={cell!r} has activation {options['activation']!r}; got activation={activation!r}")
  k_rnn, k_head = jax.random.split(key)
  rnn = stack_init(k_rnn, input_size, hidden, layers, bidirectional=bidirectional, **options)
  features = 2 * hidden if bidirectional else hidden
  head = Dense(glorot_uniform(k_head, (features, num_outputs)), jnp.zeros((num_outputs,)))
  return SequenceModel(rnn, head, initial_state_init(rnn) if learn_initial_state else None)


def initial_states(params: SequenceModel, batch_shape: tuple[int, ...]) -> tuple:
  """The states a row starts from: the learned ``h0`` broadcast to ``batch_shape``, or zeros without one.

  Args:
    params: :class:`SequenceModel`.
    batch_shape: the batch axes, e.g. ``(B,)``.

  Returns:
    One state per layer (a :class:`jaxlstm.Bidirectional` pair for a bidirectional one), leaves
    ``(*batch_shape, F)``.

  Example:
    >>> from jaxlstm.models import initial_states, model_init
    >>> model = model_init(jax.random.key(0), 3, 2, hidden=5, layers=2)
    >>> [s.h.shape for s in initial_states(model, (4,))]
    [(4, 5), (4, 5)]
  """
  h0 = params.h0 if params.h0 is not None else initial_state_init(params.rnn)
  return broadcast_state(h0, batch_shape)


def model_apply(
  params: SequenceModel,
  xs: jax.Array,
  *,
  per_step: bool,
  lengths=None,
  mask=None,
  dropout: float = 0.0,
  key=None,
  compute_dtype=None,
  vocab_size: int | None = None,
  states=None,
  return_state: bool = False,
  input_dropout: float = 0.0,
  recurrent_dropout: float = 0.0,
  zoneout: float | dict = 0.0,
  weight_drop: float = 0.0,
):
  """Runs the model.

  Args:
    params: :class:`SequenceModel`.
    xs: ``(B, T, I)`` floats, or ``(B, T)`` token ids when ``vocab_size`` is set.
    per_step: return outputs for every step ``(B, T, O)``; else one per
      sequence ``(B, O)``, read from the last layer's final state (the last
      valid step under ``lengths`` or ``mask``).
    lengths, mask: passed to :func:`jaxlstm.stack`.
    dropout, key: dropout between recurrent layers, and the key of the regularizers' masks.
    compute_dtype: e.g. ``jnp.bfloat16``: params and inputs are cast to it for
      the forward pass, the recurrent state stays float32, and the outputs are
      float32. The master params keep their own dtype.
    vocab_size: one-hot the token ids of ``xs`` to this size.
    states: the stack's initial states, one per layer with leaves ``(B, F)`` (a stateful run's carry);
      when ``None``, the model's learned ``h0`` broadcast to the batch, or zeros if it has none.
    return_state: also return every layer's final state, for the next window of a stream.
    input_dropout, recurrent_dropout, zoneout, weight_drop: the recurrent regularizers of every layer, as
      :func:`jaxlstm.stack` takes them (:mod:`jaxlstm.regularizers`).

  Returns:
    Outputs in float32: ``(B, T, O)`` with ``per_step``, else ``(B, O)``; with ``return_state``,
    ``(outputs, states)``.

  Example:
    >>> from jaxlstm.models import model_apply, model_init
    >>> model = model_init(jax.random.key(0), 3, 4, hidden=5)
    >>> xs = jnp.ones((2, 7, 3))
    >>> model_apply(model, xs, per_step=False, lengths=jnp.array([7, 2])).shape
    (2, 4)
    >>> model_apply(model, xs, per_step=True, compute_dtype=jnp.bfloat16).dtype
    dtype('float32')

    Token ids, one-hot encoded inside, for a language model over 4 symbols:

    >>> lm = model_init(jax.random.key(0), 4, 4, hidden=5)
    >>> model_apply(lm, jnp.array([[0, 3, 1]]), per_step=True, vocab_size=4).shape
    (1, 3, 4)

    A stream cut into windows: the second window starts from the first one's final states.

    >>> out, states = model_apply(lm, jnp.array([[0, 3]]), per_step=True, vocab_size=4, return_state=True)
    >>> out2, _ = model_apply(lm, jnp.array([[1]]), per_step=True, vocab_size=4, states=states, return_state=True)
    >>> bool(jnp.allclose(out2[:, -1], model_apply(lm, jnp.array([[0, 3, 1]]), per_step=True, vocab_size=4)[:, -1],
    ...                   atol=1e-6))
    True
  """
  if vocab_size is not None:
    xs = jax.nn.one_hot(xs, vocab_size, dtype=jnp.float32)
  rnn, head = params.rnn, params.head
  if compute_dtype is not None:
    rnn, head = jax.tree_util.tree_map(lambda a: a.astype(compute_dtype), (rnn, head))
    xs = xs.astype(compute_dtype)
  if states is None and params.h0 is not None:
    # The learned state stays in its own dtype (float32 under bf16), as the stack's carry does.
    states = initial_states(params, xs.shape[:-2])
  states, hs = stack(
    rnn,
    xs,
    states,
    lengths=lengths,
    mask=mask,
    dropout=dropout,
    key=key,
    input_dropout=input_dropout,
    recurrent_dropout=recurrent_dropout,
    zoneout=zoneout,
    weight_drop=weight_drop,
  )
  if per_step:
    feats = hs
  else:
    last = states[-1]
    # A backward direction ends at t = 0, so its final state is its output there.
    feats = jnp.concatenate([last.forward.h, last.backward.h], -1) if isinstance(last, Bidirectional) else last.h
  out = (feats.astype(head.w.dtype) @ head.w + head.b).astype(jnp.float32)
  return (out, states) if return_state else out


def task_loss(kind: str, outputs: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
  """Loss and metrics of a task kind.

  ``classify``: softmax cross-entropy and accuracy of ``(B, O)`` logits against
  ``ys (B,)``. ``regress``: mean squared error against ``ys (B, O)``.
  ``seq_classify`` and ``lm``: per-step cross-entropy and accuracy of
  ``(B, T, O)`` logits against ``ys (B, T)``, averaged over valid steps
  (``batch["lengths"]`` when present); ``lm`` also reports bits per character.

  Args:
    kind: one of :data:`KINDS`.
    outputs: the model's outputs, ``(B, O)`` or ``(B, T, O)`` as the kind needs.
    batch: a dict with ``ys`` and, for per-step kinds, optionally ``lengths``.

  Returns:
    ``(loss, metrics)``: a scalar and a dict of scalars.

  Raises:
    ValueError: for an unknown ``kind``.

  Example:
    >>> from jaxlstm.models import task_loss
    >>> logits = jnp.array([[2.0, 0.0], [0.0, 2.0]])
    >>> loss, metrics = task_loss("classify", logits, {"ys": jnp.array([0, 0])})
    >>> float(metrics["accuracy"])
    0.5
    >>> loss, metrics = task_loss("lm", jnp.zeros((1, 3, 4)), {"ys": jnp.zeros((1, 3), jnp.int32)})
    >>> round(float(metrics["bits_per_char"]), 4)  # uniform over 4 symbols: 2 bits
    2.0
  """
  ys = batch["ys"]
  if kind == "regress":
    mse = jnp.mean(jnp.square(outputs - ys))
    return mse, {"mse": mse}
  if kind == "classify":
    xent = optax.softmax_cross_entropy_with_integer_labels(outputs, ys).mean()
    acc = jnp.mean(jnp.argmax(outputs, -1) == ys)
    return xent, {"accuracy": acc}
  if kind in ("seq_classify", "lm"):
    xent = optax.softmax_cross_entropy_with_integer_labels(outputs, ys)
    hit = (jnp.argmax(outputs, -1) == ys).astype(jnp.float32)
    if batch.get("lengths") is not None:
      w = (jnp.arange(ys.shape[1])[None, :] < batch["lengths"][:, None]).astype(jnp.float32)
    else:
      w = jnp.ones(ys.shape, jnp.float32)
    denom = jnp.maximum(jnp.sum(w), 1.0)
    loss = jnp.sum(xent * w) / denom
    metrics = {"accuracy": jnp.sum(hit * w) / denom}
    if kind == "lm":
      metrics["bits_per_char"] = loss / jnp.log(2.0)
    return loss, metrics
  raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
