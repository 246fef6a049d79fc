"""Weight converters between jaxlstm and PyTorch, Keras 3, Flax, Equinox and Haiku.

Each framework has its own module, imported lazily: importing
:mod:`jaxlstm.interop` imports none of the peers.

* :mod:`jaxlstm.interop.torch`: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and their
  cells.
* :mod:`jaxlstm.interop.keras`: ``LSTM``, ``GRU``, ``SimpleRNN``,
  ``Bidirectional`` and their cells.
* :mod:`jaxlstm.interop.flax`: Linen and NNX ``LSTMCell``,
  ``OptimizedLSTMCell`` and ``GRUCell``.
* :mod:`jaxlstm.interop.xlstm`: NX-AI's ``xlstm`` sLSTM cell and layer, read
  only (``from_xlstm``, and its state both ways); import it from there.
* :mod:`jaxlstm.interop.equinox`: ``eqx.nn.LSTMCell`` and ``eqx.nn.GRUCell``
  (``from_equinox``, ``to_equinox`` and their states); import it from there.
* :mod:`jaxlstm.interop.haiku`: ``hk.LSTM`` and ``hk.VanillaRNN`` params dicts
  (``from_haiku``, ``to_haiku`` and their states); ``hk.GRU``, which resets
  ``h`` before the recurrent matmul, is refused. Import it from there.

``from_*`` reads a peer's weights into jaxlstm params; ``to_*`` writes jaxlstm
params into a peer. ``to_*`` then ``from_*`` gives the params back bit for bit
(for Haiku's LSTM, whose run-time +1 on the forget gate is folded into our
bias, up to that sum's rounding where a forget bias is below 0.5).
What a layer computes travels in its params, the Elman RNN's activation
included (PyTorch's ``nonlinearity``, Keras' and Flax's activation): ``to_*``
refuses a peer that computes another one. ``*_options`` gives only the call
settings that the params do not carry, such as ``time_major`` and ``merge``.
"""

from jaxlstm.interop.flax import flax_options, from_flax, from_flax_carry, to_flax, to_flax_carry
from jaxlstm.interop.keras import from_keras, keras_options, to_keras
from jaxlstm.interop.torch import from_torch, from_torch_state, to_torch, to_torch_state, torch_options

__all__ = [
  "flax_options",
  "from_flax",
  "from_flax_carry",
  "from_keras",
  "from_torch",
  "from_torch_state",
  "keras_options",
  "to_flax",
  "to_flax_carry",
  "to_keras",
  "to_torch",
  "to_torch_state",
  "torch_options",
]
