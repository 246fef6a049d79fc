"""The kernel interface: the records, the registry and the kernels that ship with jaxlstm.

A kernel runs the time-major core of one layer; :func:`jaxlstm.layer` picks
one per call (``impl="auto"``: the fastest that can run it) and the layer
shell does the layout work around it. A new kernel is a :class:`Kernel`
record plus one :func:`register_kernel` call.

* ``fused``: plain and peephole LSTMs, with a hand-written backward pass.
* ``fused_gru``, ``fused_rnn``: GRU and Elman RNN layers, built the same way.
* ``native``: plain and peephole float32 LSTMs on CPU, the fused kernel's loops in C++.
* ``native_gru``: float32 GRUs on CPU, the fused GRU kernel's loops in C++.
* ``parallel``: minGRU and minLSTM layers as one associative scan over time.
* ``pallas``, ``pallas_gru``: plain LSTM and GRU layers on CUDA GPUs, the whole time loop in one Pallas (Triton)
  kernel launch.
* ``cudnn``: plain float32 LSTMs as one cuDNN call on CUDA GPUs.
* ``reference``: ``lax.scan`` over the cell's step, for every cell and option.
* ``shell``: the layer shell, ``shell.run(kernel.run, params, xs, state, ...)``,
  to run a kernel's core in the caller's layout.
"""

from jaxlstm._src import shell
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

__all__ = [
  "Kernel",
  "KernelChoice",
  "LayerCall",
  "check_impl",
  "cudnn",
  "fused",
  "fused_gru",
  "fused_rnn",
  "impls",
  "kernel_names",
  "native",
  "native_gru",
  "pallas",
  "pallas_gru",
  "parallel",
  "passed_over",
  "reasons",
  "reference",
  "register_kernel",
  "select",
  "shell",
  "unregister_kernel",
]
