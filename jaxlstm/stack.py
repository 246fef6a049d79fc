"""Stacks of recurrent layers, optionally bidirectional, with dropout between layers."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxlstm import _checks
from jaxlstm.cells.gru import GRUParams, gru_init
from jaxlstm.layers import _check_params, _layer
from jaxlstm.cells.lstm import LSTMParams, lstm_init
from jaxlstm.cells.rnn import RNNParams, rnn_init

CELLS = {"lstm": lstm_init, "gru": gru_init, "rnn": rnn_init}
MERGES = ("concat", "sum", "mean", "mul")


class Bidirectional(NamedTuple):
  """The two directions of one bidirectional layer (params or states)."""
  forward: Any
  backward: Any


def stack_init(key: jax.Array, input_size: int, hidden_size: int, num_layers: int, *, cell: str = "lstm",
               bidirectional: bool = False, merge: str = "concat", dtype=jnp.float32,
               **cell_options) -> tuple:
  """Initializes a stack of ``num_layers`` recurrent layers.

  Args:
    key: PRNG key.
    input_size: ``I``, the input size of the first layer.
    hidden_size: ``H`` of every layer.
    num_layers: number of layers.
    cell: ``"lstm"``, ``"gru"`` or ``"rnn"``. A peephole LSTM is
      ``cell="lstm", peephole=True``.
    bidirectional: give each layer a forward and a backward direction.
    merge: how a bidirectional layer joins its two outputs: ``"concat"``
      (features ``2 * out``), ``"sum"``, ``"mean"`` or ``"mul"``. It fixes the
      next layer's input size, so pass the same value to :func:`stack`.
    dtype: parameter dtype.
    **cell_options: passed to the cell's init, for example ``peephole``,
      ``layer_norm``, ``proj_size`` or ``forget_bias`` for an LSTM.

  Returns:
    A tuple with one entry per layer: the cell's params, or a
    :class:`Bidirectional` pair of them.

  Example:
    >>> params = jaxlstm.stack_init(jax.random.key(0), 10, 32, 3)
    >>> [p.w_x.shape for p in params]
    [(10, 128), (32, 128), (32, 128)]
  """
  if cell not in CELLS:
    raise ValueError(f"cell must be one of {sorted(CELLS)}; got {cell!r}")
  _checks.check_positive_int("num_layers", num_layers)
  _check_merge(merge)
  init = CELLS[cell]
  layers = []
  size = input_size
  for k in jax.random.split(key, num_layers):
    if bidirectional:
      kf, kb = jax.random.split(k)
      layer = Bidirectional(init(kf, size, hidden_size, dtype=dtype, **cell_options),
                            init(kb, size, hidden_size, dtype=dtype, **cell_options))
    else:
      layer = init(k, size, hidden_size, dtype=dtype, **cell_options)
    layers.append(layer)
    size = _output_size(layer, merge)
  return tuple(layers)


def _check_merge(merge: str) -> None:
  if merge not in MERGES:
    raise ValueError(f"merge must be one of {MERGES}; got {merge!r}")


def _output_size(layer: Any, merge: str) -> int:
  if isinstance(layer, Bidirectional):
    out = layer.forward.output_size
    return 2 * out if merge == "concat" else out
  return layer.output_size


def _merge(fw: jax.Array, bw: jax.Array, merge: str) -> jax.Array:
  if merge == "concat":
    return jnp.concatenate([fw, bw], axis=-1)
  if merge == "sum":
    return fw + bw
  if merge == "mean":
    return (fw + bw) * 0.5
  return fw * bw


def _check_stack(params: Any, merge: str) -> None:
  if isinstance(params, (LSTMParams, GRUParams, RNNParams, Bidirectional)):
    raise TypeError(f"params must be a tuple of layer params from stack_init; got a single "
                    f"{type(params).__name__} (wrap it in a tuple)")
  if not isinstance(params, (tuple, list)) or not params:
    raise TypeError(f"params must be a non-empty tuple of layer params from stack_init; got {type(params).__name__}")
  size = None
  for i, layer in enumerate(params):
    dirs = (("forward", layer.forward), ("backward", layer.backward)) if isinstance(layer, Bidirectional) else (
        ("", layer),)
    for d, p in dirs:
      name = f"params[{i}]" + (f".{d}" if d else "")
      if not isinstance(p, (LSTMParams, GRUParams, RNNParams)):
        raise TypeError(f"{name} must be LSTMParams, GRUParams or RNNParams; got {type(p).__name__}")
      _check_params(name, p, type(p))
      if size is not None and p.input_size != size:
        raise ValueError(f"{name} has input size {p.input_size}, but layer {i - 1} outputs {size} features "
                         f"with merge={merge!r}")
    if isinstance(layer, Bidirectional):
      f, b = layer
      if type(f) is not type(b) or f.output_size != b.output_size:
        raise ValueError(f"params[{i}].forward and .backward must be the same kind of cell with the same "
                         f"output size; got {type(f).__name__}({f.output_size}) and "
                         f"{type(b).__name__}({b.output_size})")
    size = _output_size(layer, merge)


def stack(params: Sequence[Any], xs: jax.Array, states: Sequence[Any] | None = None, *, lengths=None, mask=None,
          resets=None, dropout: float = 0.0, key: jax.Array | None = None, merge: str = "concat",
          activation: str = "tanh", time_major: bool = False, unroll: int | bool | None = None, impl: str = "fused",
          remat: int | None = None):
  """Runs a stack of recurrent layers over a sequence.

  Each layer's output sequence is the next layer's input. ``lengths``, ``mask``
  and ``resets`` apply to every layer (see :func:`jaxlstm.scan`). A
  bidirectional layer runs its backward direction with ``reverse=True``, each
  row reversed within its own length, and merges the two outputs.

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
    key: PRNG key for dropout.
    merge: how bidirectional outputs are joined; must match :func:`stack_init`.
    activation: ``"tanh"`` or ``"relu"``, for ``rnn`` layers.
    time_major: whether time is the leading axis.
    unroll: ``lax.scan`` unroll factor; ``None`` (the default) lets the path choose: 8 on the fused path on a GPU, else 1.
    impl: ``"fused"``, ``"reference"`` or ``"cudnn"``, for LSTM layers (see :func:`jaxlstm.lstm`).
    remat: checkpoint every ``remat`` steps in each layer (see :func:`jaxlstm.lstm`).

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
  _check_merge(merge)
  _check_stack(params, merge)
  if states is not None and (not isinstance(states, (tuple, list)) or len(states) != len(params)):
    got = len(states) if isinstance(states, (tuple, list)) else type(states).__name__
    raise ValueError(f"states must be a sequence of {len(params)} layer states (one per layer); got {got}")
  if not 0.0 <= dropout < 1.0:
    raise ValueError(f"dropout must be in [0, 1); got {dropout}")
  if dropout > 0.0 and key is None:
    raise ValueError("key must be a PRNG key when dropout > 0; pass dropout=0.0 for evaluation")
  keys = jax.random.split(key, len(params)) if dropout > 0.0 else [None] * len(params)
  kw = dict(lengths=lengths, mask=mask, resets=resets, time_major=time_major, unroll=unroll, activation=activation,
            impl=impl, remat=remat)
  h = xs
  finals = []
  for i, layer in enumerate(params):
    s = None if states is None else states[i]
    name = f"states[{i}]"
    if isinstance(layer, Bidirectional):
      if s is None:
        s = Bidirectional(None, None)
      elif not (isinstance(s, Bidirectional) or (type(s) in (tuple, list) and len(s) == 2)):
        raise ValueError(f"{name} must be a Bidirectional(forward, backward) pair of states; "
                         f"got {type(s).__name__}")
      fw_state, fw = _layer(layer.forward, h, s[0], reverse=False, state_name=f"{name}.forward", **kw)
      bw_state, bw = _layer(layer.backward, h, s[1], reverse=True, state_name=f"{name}.backward", **kw)
      final, h = Bidirectional(fw_state, bw_state), _merge(fw, bw, merge)
    else:
      final, h = _layer(layer, h, s, reverse=False, state_name=name, **kw)
    finals.append(final)
    if keys[i] is not None and i < len(params) - 1:
      keep = jax.random.bernoulli(keys[i], 1.0 - dropout, h.shape)
      h = jnp.where(keep, h / (1.0 - dropout), jnp.zeros_like(h)).astype(h.dtype)
  return tuple(finals), h
