"""The kernels, one file each, and the registry that ``impl`` reads.

* :mod:`~jaxlstm.kernels.fused`: plain and peephole LSTMs, with a hand-written
  backward pass; the default wherever it applies.
* :mod:`~jaxlstm.kernels.fused_gru`, :mod:`~jaxlstm.kernels.fused_rnn`: the
  same design for GRU and Elman RNN (tanh, relu) layers.
* :mod:`~jaxlstm.kernels.native`: plain and peephole float32 LSTMs on CPU,
  the fused kernel's two time loops in C++ (an optional extension; see its
  ``why_not`` where it is not built); :mod:`~jaxlstm.kernels.native_gru`, the
  same for float32 GRUs.
* :mod:`~jaxlstm.kernels.parallel`: cells whose step is a diagonal linear
  recurrence (minGRU, minLSTM), as one associative scan over time.
* :mod:`~jaxlstm.kernels.pallas`, :mod:`~jaxlstm.kernels.pallas_gru`: plain LSTM
  and GRU layers on CUDA GPUs, the whole time loop in one Pallas (Triton) kernel
  launch.
* :mod:`~jaxlstm.kernels.cudnn`: plain float32 LSTMs as one cuDNN call (CUDA
  GPUs only).
* :mod:`~jaxlstm.kernels.reference`: ``lax.scan`` over the cell's step; every
  cell and option, and the oracle of the others.

A new kernel is one module that builds a :class:`~jaxlstm.Kernel` record plus
one :func:`~jaxlstm.register_kernel` line here.

>>> jaxlstm.kernel_names()  # in impl="auto" order
('native', 'native_gru', 'fused', 'fused_gru', 'fused_rnn', 'parallel', 'pallas', 'pallas_gru', 'cudnn', 'reference')
"""

from jaxlstm._src.kernels import (
  cudnn,
  fused,
  fused_gru,
  fused_rnn,
  native,
  native_gru,
  pallas,
  pallas_gru,
  parallel,
  reference,
)
from jaxlstm._src.kernels.registry import (
  Kernel,
  KernelChoice,
  LayerCall,
  check_impl,
  impls,
  kernel_names,
  passed_over,
  reasons,
  register_kernel,
  select,
  unregister_kernel,
)

register_kernel(fused.KERNEL)
register_kernel(native.KERNEL)
register_kernel(native_gru.KERNEL)
register_kernel(fused_gru.KERNEL)
register_kernel(fused_rnn.KERNEL)
register_kernel(parallel.KERNEL)
register_kernel(pallas.KERNEL)
register_kernel(pallas_gru.KERNEL)
register_kernel(cudnn.KERNEL)
register_kernel(reference.KERNEL)

__all__ = [
  "Kernel",
  "KernelChoice",
  "LayerCall",
  "check_impl",
  "impls",
  "kernel_names",
  "passed_over",
  "reasons",
  "register_kernel",
  "select",
  "unregister_kernel",
]
