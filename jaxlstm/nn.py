"""Deprecated alias of :mod:`jaxlstm.nnx`, the Flax NNX modules; it will be removed in 0.3.

The name clashed with the ecosystem's ``from flax import linen as nn``, so
the NNX modules moved to :mod:`jaxlstm.nnx`, after ``flax.nnx``. This module
re-exports the very same classes (``jaxlstm.nn.LSTM is jaxlstm.nnx.LSTM``)
and warns once on import.
"""

import warnings

from jaxlstm.nnx import GRU, Cell, GRUCell, Layer, LSTM, LSTMCell, RNN, RNNCell, Stack

__all__ = ["Cell", "GRU", "GRUCell", "LSTM", "LSTMCell", "Layer", "RNN", "RNNCell", "Stack"]

warnings.warn("jaxlstm.nn is deprecated and will be removed in 0.3; use jaxlstm.nnx", DeprecationWarning,
              stacklevel=2)
