"""jaxlstm: recurrent neural networks for JAX, as pure functions.

Gate layouts: LSTM ``i, f, g, o``; GRU ``r, z, n``; minGRU ``z, h``; minLSTM ``f, i, h``; sLSTM ``i, f, z, o``;
ConvLSTM ``i, f, g, o``. Weights are ``(in, out)`` (ConvLSTM kernels ``(*kernel_size, in, out)``).
"""

from jaxlstm._src.cells import Cell, Recurrence, cell_names, get_cell, register_cell, static_fields, unregister_cell
from jaxlstm._src.cells.convlstm import (
  ConvLSTM1DParams,
  ConvLSTM2DParams,
  ConvLSTMParams,
  ConvLSTMState,
  convlstm1d_init,
  convlstm2d_init,
  convlstm_step,
  convlstm_zero_state,
)
from jaxlstm._src.cells.gru import GRUParams, GRUState, gru_init, gru_step, gru_zero_state
from jaxlstm._src.cells.lstm import LayerNormParams, LSTMParams, LSTMState, lstm_init, lstm_step, lstm_zero_state
from jaxlstm._src.cells.mingru import MinGRUParams, MinGRUState, mingru_init, mingru_step, mingru_zero_state
from jaxlstm._src.cells.minlstm import MinLSTMParams, MinLSTMState, minlstm_init, minlstm_step, minlstm_zero_state
from jaxlstm._src.cells.rnn import RNNParams, RNNState, rnn_init, rnn_step, rnn_zero_state
from jaxlstm._src.cells.slstm import SLSTMParams, SLSTMState, slstm_init, slstm_step, slstm_zero_state
from jaxlstm._src.initial_state import broadcast_state, initial_state_init
from jaxlstm._src.initializers import glorot_uniform, orthogonal_blocks
from jaxlstm._src.kernels import Kernel, KernelChoice, LayerCall, kernel_names, register_kernel, unregister_kernel
from jaxlstm._src.layers import explain, gru, layer, lstm, rnn, zero_state
from jaxlstm._src.scan import scan
from jaxlstm._src.stack import Bidirectional, stack, stack_init
from jaxlstm.interop import from_flax, from_keras, from_torch, to_flax, to_keras, to_torch
from jaxlstm.train import TrainState, evaluate, fit, init_train_state, make_train_step

__version__ = "0.2.0"

__all__ = [
  "Bidirectional",
  "Cell",
  "ConvLSTM1DParams",
  "ConvLSTM2DParams",
  "ConvLSTMParams",
  "ConvLSTMState",
  "Kernel",
  "KernelChoice",
  "LayerCall",
  "Recurrence",
  "cell_names",
  "explain",
  "get_cell",
  "kernel_names",
  "layer",
  "register_cell",
  "register_kernel",
  "static_fields",
  "unregister_cell",
  "unregister_kernel",
  "TrainState",
  "GRUParams",
  "GRUState",
  "LSTMParams",
  "LSTMState",
  "LayerNormParams",
  "MinGRUParams",
  "MinGRUState",
  "MinLSTMParams",
  "MinLSTMState",
  "RNNParams",
  "RNNState",
  "SLSTMParams",
  "SLSTMState",
  "broadcast_state",
  "convlstm1d_init",
  "convlstm2d_init",
  "convlstm_step",
  "convlstm_zero_state",
  "evaluate",
  "fit",
  "from_flax",
  "from_keras",
  "from_torch",
  "glorot_uniform",
  "gru",
  "gru_init",
  "gru_step",
  "gru_zero_state",
  "init_train_state",
  "initial_state_init",
  "lstm",
  "lstm_init",
  "lstm_step",
  "lstm_zero_state",
  "make_train_step",
  "mingru_init",
  "mingru_step",
  "mingru_zero_state",
  "minlstm_init",
  "minlstm_step",
  "minlstm_zero_state",
  "orthogonal_blocks",
  "rnn",
  "rnn_init",
  "rnn_step",
  "rnn_zero_state",
  "scan",
  "slstm_init",
  "slstm_step",
  "slstm_zero_state",
  "stack",
  "stack_init",
  "to_flax",
  "to_keras",
  "to_torch",
  "zero_state",
]
