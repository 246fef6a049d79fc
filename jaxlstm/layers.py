"""One recurrent layer over a sequence: ``lstm``, ``gru`` and ``rnn``.

Each checks its arguments against the params, then unrolls its cell with
:func:`jaxlstm.scan`. Outputs come back in the dtype of ``xs``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from jaxlstm import _checks, cudnn, fused
from jaxlstm.cells.gru import GRUParams, gru_step, gru_zero_state
from jaxlstm.cells.lstm import LSTMParams, lstm_step, lstm_zero_state
from jaxlstm.cells.rnn import RNNParams, check_activation, rnn_step, rnn_zero_state
from jaxlstm.scan import _scan

_ZERO_STATE = {LSTMParams: lstm_zero_state, GRUParams: gru_zero_state, RNNParams: rnn_zero_state}
_NAMES = {LSTMParams: "lstm", GRUParams: "gru", RNNParams: "rnn"}


def zero_state(params: LSTMParams | GRUParams | RNNParams, batch_shape: tuple[int, ...] = (),
               dtype=None) -> Any:
  """The all-zero initial state of any cell, with leaves ``(*batch_shape, F)``."""
  try:
    fn = _ZERO_STATE[type(params)]
  except KeyError:
    raise TypeError(f"params must be LSTMParams, GRUParams or RNNParams; got {type(params).__name__}") from None
  return fn(params, batch_shape, dtype)


def _check_params(name: str, params: Any, cls: type) -> None:
  if not isinstance(params, cls):
    raise TypeError(f"{name} must be {cls.__name__}; got {type(params).__name__}")
  _checks.check_float(f"{name}.w_x", params.w_x)
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if leaf.dtype != params.w_x.dtype:
      raise TypeError(f"{name}{jax.tree_util.keystr(path)} has dtype {leaf.dtype} but {name}.w_x has "
                      f"{params.w_x.dtype}; all params must share one dtype")


def prepare(params: Any, xs: Any, state: Any, lengths: Any, mask: Any, resets: Any, *,
            time_major: bool, state_name: str = "state", xs_name: str = "xs"):
  """Checks a layer call against already-checked params and fills in the default state."""
  xs = _checks.as_array(xs_name, xs)
  T, batch_shape = _checks.check_sequence(xs_name, xs, params.input_size, time_major=time_major)
  _checks.check_dtype_match(xs_name, xs, params.dtype)
  expected = zero_state(params, batch_shape)
  if state is None:
    state = expected
  else:
    _checks.check_state(state_name, state, expected)
  lengths, mask, resets = _checks.check_missing_data(lengths, mask, resets, T, batch_shape, time_major=time_major)
  return xs, state, lengths, mask, resets


IMPLS = ("fused", "reference", "cudnn")


def _layer(params, xs, state, *, lengths, mask, resets, reverse, time_major, unroll, activation="tanh",
           impl="fused", remat=None, state_name="state"):
  """Checks one layer call, then runs it on the fused path if it applies, else on the reference scan."""
  if impl not in IMPLS:
    raise ValueError(f"impl must be one of {IMPLS}; got {impl!r}")
  if remat is not None:
    if isinstance(remat, bool) or not isinstance(remat, int) or remat < 1:
      raise ValueError(f"remat must be a positive int or None; got {remat!r}")
    if impl != "fused" or not fused.supports(params, resets=resets, remat=remat):
      raise ValueError(f"remat needs impl='fused' and a plain or peephole LSTM without resets, layer_norm or "
                       f"proj_size; got impl={impl!r}, {type(params).__name__}, resets "
                       f"{'given' if resets is not None else 'None'}")
  step = cell_step(params, activation=activation)
  if impl == "cudnn":
    why = cudnn.unsupported(params, mask=mask, resets=resets, remat=remat, reverse=reverse, time_major=time_major)
    if why is not None:
      raise ValueError(f"impl='cudnn' cannot run this layer: {why}")
  xs, state, lengths, mask, resets = prepare(params, xs, state, lengths, mask, resets, time_major=time_major,
                                             state_name=state_name)
  if impl == "cudnn":
    final, hs = cudnn.lstm_cudnn(params, xs, state, lengths=lengths, reverse=reverse, time_major=time_major)
  elif impl == "fused" and fused.supports(params, resets=resets):
    final, hs = fused.lstm_fused(params, xs, state, lengths=lengths, mask=mask, reverse=reverse,
                                 time_major=time_major, unroll=unroll, remat=remat)
  else:
    final, hs = _scan(step, params, xs, state, lengths, mask, resets, reverse, time_major,
                      1 if unroll is None else unroll)
  return final, hs.astype(xs.dtype)


_SEQ_DOC = """
  Args:
    params: the layer's params.
    xs: inputs ``(*batch, T, I)``, or ``(T, *batch, I)`` if ``time_major``,
      in the params' dtype. ``batch`` may be empty or have several axes.
    state: initial state; zeros when ``None``.
    lengths: ``(*batch,)`` integer lengths of right-padded rows. Past its length
      a row's state is frozen and its outputs are zero; the final state is the
      one at its last valid step.
    mask: ``(*batch, T)`` bools (time-major: ``(T, *batch)``); a ``False`` step
      keeps the previous state and outputs zero.
    resets: same shape as ``mask``; ``True`` resets the state to the initial
      state before that step (packed sequences).
    reverse: process from the end; outputs keep the original order, and with
      ``lengths`` each row is reversed within its own length.
    time_major: whether time is the leading axis.
    unroll: ``lax.scan`` unroll factor; ``None`` lets the path choose: 8 on
      the fused path on a GPU, else 1.

  Returns:
    ``(final_state, hs)``; ``hs`` is ``(*batch, T, {out})`` (time-major:
    ``(T, *batch, {out})``) in the dtype of ``xs``. ``T = 0`` returns the initial
    state and an empty ``hs``.

  Raises:
    ValueError, TypeError: with the argument's name, when a shape or dtype does
    not match the params. See :func:`jaxlstm.scan` for the exact semantics of
    ``lengths``, ``mask`` and ``resets``.
"""


def lstm(params: LSTMParams, xs: jax.Array, state=None, *, lengths=None, mask=None, resets=None,
         reverse: bool = False, time_major: bool = False, unroll: int | bool | None = None, impl: str = "fused",
         remat: int | None = None):
  """Runs one LSTM layer (:func:`jaxlstm.lstm_step`) over a sequence.

  ``impl="fused"`` (the default) uses the fast path of :mod:`jaxlstm.fused`
  where it applies (plain and peephole LSTMs without ``resets``) and the
  reference scan elsewhere; ``impl="reference"`` always unrolls
  :func:`jaxlstm.lstm_step` with :func:`jaxlstm.scan`; ``impl="cudnn"`` runs
  a plain float32 LSTM as one cuDNN call on a CUDA GPU (see
  :mod:`jaxlstm.cudnn`; ``lengths`` but no ``mask``, ``resets``, ``reverse``
  or ``time_major``). ``remat=k`` (fused
  path only) checkpoints every ``k`` steps, so that training memory grows
  with ``T / k`` chunk states instead of every step's gates: for very long
  sequences.
  """
  _check_params("params", params, LSTMParams)
  return _layer(params, xs, state, lengths=lengths, mask=mask, resets=resets, reverse=reverse,
                time_major=time_major, unroll=unroll, impl=impl, remat=remat)


def gru(params: GRUParams, xs: jax.Array, state=None, *, lengths=None, mask=None, resets=None,
        reverse: bool = False, time_major: bool = False, unroll: int | bool | None = None):
  """Runs one GRU layer (:func:`jaxlstm.gru_step`) over a sequence."""
  _check_params("params", params, GRUParams)
  return _layer(params, xs, state, lengths=lengths, mask=mask, resets=resets, reverse=reverse,
                time_major=time_major, unroll=unroll, impl="reference")


def rnn(params: RNNParams, xs: jax.Array, state=None, *, activation: str = "tanh", lengths=None, mask=None,
        resets=None, reverse: bool = False, time_major: bool = False, unroll: int | bool | None = None):
  """Runs one Elman RNN layer (:func:`jaxlstm.rnn_step`) over a sequence.

  ``activation`` is ``"tanh"`` or ``"relu"``.
  """
  _check_params("params", params, RNNParams)
  return _layer(params, xs, state, lengths=lengths, mask=mask, resets=resets, reverse=reverse,
                time_major=time_major, unroll=unroll, activation=activation, impl="reference")


lstm.__doc__ += _SEQ_DOC.format(out="P")
gru.__doc__ += _SEQ_DOC.format(out="H")
rnn.__doc__ += _SEQ_DOC.format(out="H")


def cell_step(params: Any, *, activation: str = "tanh"):
  """The step function for a params type."""
  if isinstance(params, LSTMParams):
    return lstm_step
  if isinstance(params, GRUParams):
    return gru_step
  if isinstance(params, RNNParams):
    check_activation(activation)
    return functools.partial(rnn_step, activation=activation)
  raise TypeError(f"params must be LSTMParams, GRUParams or RNNParams; got {type(params).__name__}")
