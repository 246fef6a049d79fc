"""Stacks of recurrent layers, optionally bidirectional, with dropout between layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxlstm._src import checks, regularizers
from jaxlstm._src.cells.registry import cell_of, get_cell, is_cell_params
from jaxlstm._src.cells.rnn import check_call_activation
from jaxlstm._src.layers import check_options, check_params, check_sequence, check_state, run_checked, zero_state_shape
from jaxlstm._src.types import Array

MERGES = ("concat", "sum", "mean", "mul")


class Bidirectional(NamedTuple):
  """The two directions of one bidirectional layer: their params, or their states.

  Attributes:
    forward: the direction that reads the sequence from its first step.
    backward: the direction that reads each row from its last valid step.

  Example:
    >>> params = jaxlstm.stack_init(jax.random.key(0), 3, 5, 1, cell="gru", bidirectional=True)
    >>> isinstance(params[0], jaxlstm.Bidirectional), params[0].backward.w_x.shape
    (True, (3, 15))
    >>> states, hs = jaxlstm.stack(params, jnp.ones((2, 7, 3)))
    >>> states[0].forward.h.shape, hs.shape  # the outputs of the two directions are concatenated
    ((2, 5), (2, 7, 10))
  """

  forward: Any
  backward: Any


def stack_init(
  key: jax.Array,
  input_size: int,
  hidden_size: int,
  num_layers: int,
  *,
  cell: str = "lstm",
  bidirectional: bool = False,
  merge: str = "concat",
  dtype: DTypeLike = jnp.float32,
  **cell_options: Any,
) -> tuple:
  """Initializes a stack of ``num_layers`` recurrent layers.

  Args:
    key: PRNG key.
    input_size: ``I``, the input size of the first layer.
    hidden_size: ``H`` of every layer.
    num_layers: number of layers.
    cell: the name of a registered cell: ``"lstm"``, ``"gru"``, ``"rnn"``
      or one added with :func:`jaxlstm.register_cell`. A peephole LSTM is
      ``cell="lstm", peephole=True``; a relu RNN ``cell="rnn",
      activation="relu"``.
    bidirectional: give each layer a forward and a backward direction.
    merge: how a bidirectional layer joins its two outputs: ``"concat"``
      (features ``2 * out``), ``"sum"``, ``"mean"`` or ``"mul"``. It fixes the
      next layer's input size, so pass the same value to :func:`stack`.
    dtype: parameter dtype.
    **cell_options: passed to the cell's init, for example ``peephole``,
      ``layer_norm``, ``proj_size`` or ``forget_bias`` for an LSTM, and
      ``activation`` for an RNN.

  Returns:
    A tuple with one entry per layer: the cell's params, or a
    :class:`Bidirectional` pair of them.

  Example:
    >>> params = jaxlstm.stack_init(jax.random.key(0), 10, 32, 3)
    >>> [p.w_x.shape for p in params]
    [(10, 128), (32, 128), (32, 128)]
  """
  init = get_cell(cell).init
  checks.check_positive_int("num_layers", num_layers)
  check_merge(merge)
  layers = []
  size = input_size
  for k in jax.random.split(key, num_layers):
    if bidirectional:
      kf, kb = jax.random.split(k)
      layer = Bidirectional(
        init(kf, size, hidden_size, dtype=dtype, **cell_options),
        init(kb, size, hidden_size, dtype=dtype, **cell_options),
      )
    else:
      layer = init(k, size, hidden_size, dtype=dtype, **cell_options)
    layers.append(layer)
    size = _output_size(layer, merge)
  return tuple(layers)


def check_merge(merge: str) -> None:
  """Raises ``ValueError`` unless ``merge`` is one of :data:`MERGES`.

  Example:
    >>> from jaxlstm._src.stack import check_merge
    >>> check_merge("sum")
    >>> check_merge("max")
    Traceback (most recent call last):
    ValueError: merge must be one of ('concat', 'sum', 'mean', 'mul'); got 'max'
  """
  if merge not in MERGES:
    raise ValueError(f"merge must be one of {MERGES}; got {merge!r}")


def _output_size(layer: Any, merge: str | None) -> int:
  if isinstance(layer, Bidirectional):
    out = layer.forward.output_size
    return 2 * out if merge == "concat" else out
  return layer.output_size


def merge_outputs(fw: jax.Array, bw: jax.Array, merge: str) -> jax.Array:
  """Joins the two directions' outputs (or final ``h``) of a bidirectional layer.

  Args:
    fw, bw: ``(..., F)`` outputs of the forward and backward directions.
    merge: one of :data:`MERGES`.

  Returns:
    ``(..., 2F)`` for ``"concat"``, else ``(..., F)``.

  Example:
    >>> from jaxlstm._src.stack import merge_outputs
    >>> merge_outputs(jnp.ones((2, 3)), jnp.ones((2, 3)), "concat").shape
    (2, 6)
    >>> merge_outputs(jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]), "mean")
    Array([2., 3.], dtype=float32)
  """
  if merge == "concat":
    return jnp.concatenate([fw, bw], axis=-1)
  if merge == "sum":
    return fw + bw
  if merge == "mean":
    return (fw + bw) * 0.5
  return fw * bw


def check_stack(params: Any, merge: str | None) -> None:
  """Checks a stack's params: a non-empty tuple of registered cells' params or pairs of them, whose sizes chain.

  With ``merge=None`` the sizes are not chained (the caller does not know the merge).

  Raises:
    TypeError: ``params`` is not such a tuple, or a layer's params are not a registered cell's, or
      the layers' dtypes differ.
    ValueError: naming the layer, when its input size is not the previous layer's output size, or when
      its cell has another number of feature axes than the first layer's (a vector cell after a
      convolutional one).

  Example:
    >>> from jaxlstm._src.stack import check_stack
    >>> params = jaxlstm.stack_init(jax.random.key(0), 3, 5, 2, bidirectional=True)
    >>> check_stack(params, "concat")
    >>> check_stack(params, "sum")
    Traceback (most recent call last):
    ValueError: params[1].forward has input size 10, but layer 0 outputs 5 features with merge='sum'
  """
  if is_cell_params(params) or isinstance(params, Bidirectional):
    raise TypeError(
      f"params must be a tuple of layer params from stack_init; got a single "
      f"{type(params).__name__} (wrap it in a tuple)"
    )
  if not isinstance(params, (tuple, list)) or not params:
    raise TypeError(f"params must be a non-empty tuple of layer params from stack_init; got {type(params).__name__}")
  size, dtype, axes = None, None, None
  for i, layer in enumerate(params):
    dirs = (
      (("forward", layer.forward), ("backward", layer.backward)) if isinstance(layer, Bidirectional) else (("", layer),)
    )
    for d, p in dirs:
      name = f"params[{i}]" + (f".{d}" if d else "")
      check_params(name, p)
      if dtype is not None and p.dtype != dtype:
        raise TypeError(f"{name} has dtype {p.dtype} but params[0] has {dtype}; every layer must share one dtype")
      dtype = p.dtype
      cell = cell_of(p)
      if axes is not None and cell.feature_axes != axes[1]:
        raise ValueError(
          f"{name} is a {cell.name} layer, whose steps have {cell.feature_axes} feature axes, but "
          f"params[0] is a {axes[0]} layer, with {axes[1]}: each layer's outputs are the next "
          f"one's inputs, so every layer of a stack must have as many"
        )
      axes = axes or (cell.name, cell.feature_axes)
      if size is not None and p.input_size != size:
        raise ValueError(
          f"{name} has input size {p.input_size}, but layer {i - 1} outputs {size} features with merge={merge!r}"
        )
    if isinstance(layer, Bidirectional):
      f, b = layer
      if type(f) is not type(b) or f.output_size != b.output_size:
        raise ValueError(
          f"params[{i}].forward and .backward must be the same kind of cell with the same "
          f"output size; got {type(f).__name__}({f.output_size}) and "
          f"{type(b).__name__}({b.output_size})"
        )
    size = None if merge is None else _output_size(layer, merge)


def stack(
  params: Sequence[Any],
  xs: jax.Array,
  states: Sequence[Any] | None = None,
  *,
  lengths: Array | None = None,
  mask: Array | None = None,
  resets: Array | None = None,
  dropout: float = 0.0,
  key: jax.Array | None = None,
  merge: str = "concat",
  activation: str | None = None,
  time_major: bool = False,
  unroll: int | bool | None = None,
  impl: str = "auto",
  remat: int | None = None,
  input_dropout: float = 0.0,
  recurrent_dropout: float = 0.0,
  zoneout: float | dict = 0.0,
  weight_drop: float = 0.0,
) -> tuple[tuple[Any, ...], jax.Array]:
  """Runs a stack of recurrent layers over a sequence.

  Each layer's output sequence is the next layer's input. ``lengths``, ``mask``
  and ``resets`` apply to every layer (see :func:`jaxlstm.scan`). A
  bidirectional layer runs its backward direction with ``reverse=True``, each
  row reversed within its own length, and merges the two outputs (along the
  last axis, the channels of a convolutional cell's feature maps).

  Args:
    params: the tuple from :func:`stack_init`.
    xs: inputs ``(*batch, T, I)``, or ``(T, *batch, I)`` if ``time_major``.
    states: optional initial states, one per layer (a :class:`Bidirectional`
      pair for a bidirectional layer); zeros when ``None``.
    lengths: optional ``(*batch,)`` integer lengths.
    mask: optional ``(*batch, T)`` validity flags.
    resets: optional ``(*batch, T)`` segment-start flags.
    dropout: drop rate applied to each layer's output except the last, as
      PyTorch's ``dropout``. Needs ``key`` when positive; pass ``0.0`` to
      evaluate.
    key: PRNG key for dropout and the regularizers.
    merge: how bidirectional outputs are joined; must match :func:`stack_init`.
    activation: may restate the activation of ``rnn`` layers, which their
      params carry; a different value raises.
    time_major: whether time is the leading axis.
    unroll: loop unroll factor; ``None`` (the default) lets the kernel choose: 8 on the fused kernel on a GPU,
      else 1.
    impl: ``"auto"`` (the fastest kernel that can run each layer) or a
      kernel's name, for every layer (see :func:`jaxlstm.layer`).
    remat: checkpoint every ``remat`` steps in each layer (see :func:`jaxlstm.lstm`).
    input_dropout, recurrent_dropout, zoneout, weight_drop: the recurrent
      regularizers of every layer and direction, as :func:`jaxlstm.layer`
      takes them (Keras' ``dropout`` and ``recurrent_dropout`` of each layer),
      each layer and direction with masks of its own.

  Returns:
    ``(states, hs)``: ``states`` is a tuple with every layer's final state, and
    ``hs`` is the last layer's output sequence ``(*batch, T, F)``. ``hs`` gives
    Keras' ``return_sequences``, ``hs[..., -1, :]`` (or, with ``lengths``, the
    last layer's final ``h``) gives its default, and ``states`` gives
    ``return_state``.

  Example:
    >>> params = jaxlstm.stack_init(jax.random.key(0), 10, 32, 2, bidirectional=True)
    >>> states, hs = jaxlstm.stack(params, jnp.zeros((4, 7, 10)))
    >>> hs.shape, states[-1].forward.h.shape
    ((4, 7, 64), (4, 32))
  """
  check_merge(merge)
  check_stack(params, merge)
  check_options(impl=impl, remat=remat)
  first = params[0].forward if isinstance(params[0], Bidirectional) else params[0]
  # Checked once for the whole stack: every layer sees the same lengths, mask and resets.
  xs, lengths, mask, resets = check_sequence(first, xs, lengths, mask, resets, time_major=time_major)
  axes = cell_of(first).feature_axes
  if activation is not None:
    for i, layer in enumerate(params):
      for p in layer if isinstance(layer, Bidirectional) else (layer,):
        if "activation" not in getattr(type(p), "static_fields", ()):
          raise ValueError(
            f"activation={activation!r} was given, but params[{i}] is a {type(p).__name__}, "
            f"which has no activation to choose; drop the argument"
          )
        check_call_activation(p, activation)
  if states is not None and (not isinstance(states, (tuple, list)) or len(states) != len(params)):
    got = len(states) if isinstance(states, (tuple, list)) else type(states).__name__
    raise ValueError(f"states must be a sequence of {len(params)} layer states (one per layer); got {got}")
  if not 0.0 <= dropout < 1.0:
    raise ValueError(f"dropout must be in [0, 1); got {dropout}")
  if dropout > 0.0 and key is None:
    raise ValueError("key must be a PRNG key when dropout > 0; pass dropout=0.0 for evaluation")
  keys = jax.random.split(key, len(params)) if dropout > 0.0 and key is not None else [None] * len(params)
  regs = [
    [
      regularizers.check_regularizers(
        cell_of(p),
        input_dropout=input_dropout,
        recurrent_dropout=recurrent_dropout,
        zoneout=zoneout,
        weight_drop=weight_drop,
        key=key,
        name=f"params[{i}]",
      )
      for p in (layer if isinstance(layer, Bidirectional) else (layer,))
    ]
    for i, layer in enumerate(params)
  ]
  # The regularizers' keys come from a fold of ``key``, so that dropout between layers draws the same
  # masks with or without them.
  use_key = any(r.active for rs in regs for r in rs)
  reg_keys = (
    jax.random.split(jax.random.fold_in(key, 1), (len(params), 2))
    if use_key and key is not None
    else [[None, None]] * len(params)
  )
  kw: dict[str, Any] = dict(
    lengths=lengths, mask=mask, resets=resets, time_major=time_major, unroll=unroll, impl=impl, remat=remat
  )
  h = xs
  finals = []
  for i, layer in enumerate(params):
    s = None if states is None else states[i]
    name = f"states[{i}]"
    # Per layer: a convolutional layer with padding="valid" or strides gives the next smaller feature maps.
    batch_shape = zero_state_shape(h, time_major=time_major, feature_axes=axes)
    if isinstance(layer, Bidirectional):
      if s is None:
        s = Bidirectional(None, None)
      elif not (isinstance(s, Bidirectional) or (type(s) in (tuple, list) and len(s) == 2)):
        raise ValueError(f"{name} must be a Bidirectional(forward, backward) pair of states; got {type(s).__name__}")
      s_fw = check_state(f"{name}.forward", layer.forward, s[0], batch_shape)
      s_bw = check_state(f"{name}.backward", layer.backward, s[1], batch_shape)
      fw_state, fw = run_checked(
        layer.forward, h, s_fw, reverse=False, name=f"params[{i}].forward", reg=regs[i][0], key=reg_keys[i][0], **kw
      )
      bw_state, bw = run_checked(
        layer.backward, h, s_bw, reverse=True, name=f"params[{i}].backward", reg=regs[i][1], key=reg_keys[i][1], **kw
      )
      final, h = Bidirectional(fw_state, bw_state), merge_outputs(fw, bw, merge)
    else:
      s = check_state(name, layer, s, batch_shape)
      final, h = run_checked(layer, h, s, reverse=False, name=f"params[{i}]", reg=regs[i][0], key=reg_keys[i][0], **kw)
    finals.append(final)
    drop_key = keys[i]
    if drop_key is not None and i < len(params) - 1:
      keep = jax.random.bernoulli(drop_key, 1.0 - dropout, h.shape)
      h = jnp.where(keep, h / (1.0 - dropout), jnp.zeros_like(h)).astype(h.dtype)
  return tuple(finals), h
