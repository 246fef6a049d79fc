"""Deprecated alias of :mod:`jaxlstm.nnx`, the Flax NNX modules; it will be removed in 0.3.

The name clashed with the ecosystem's ``from flax import linen as nn``, so
the NNX modules moved to :mod:`jaxlstm.nnx`, after ``flax.nnx``. This module
re-exports the very same classes (``jaxlstm.nn.LSTM is jaxlstm.nnx.LSTM``)
and warns once on import.
"""

import warnings

from jaxlstm import nnx as _nnx

# Every public name of jaxlstm.nnx, so that a module added there is here too.
__all__ = list(_nnx.__all__)
globals().update({name: getattr(_nnx, name) for name in __all__})

warnings.warn("jaxlstm.nn is deprecated and will be removed in 0.3; use jaxlstm.nnx", DeprecationWarning, stacklevel=2)
