r"""Weights from NX-AI's ``xlstm`` package: its sLSTM cell and layer as :class:`jaxlstm.SLSTMParams`.

``xlstm`` (``pip install xlstm``; PyTorch) computes the sLSTM of Beck et al.
(2024) in ``xlstm.blocks.slstm``. Its **cell**, ``sLSTMCell``, takes the
gates' pre-activations ``Wx (B, S, 4H)`` and holds the recurrence; its
**layer**, ``sLSTMLayer``, adds around the cell a causal convolution (the
input of the i and f gates), four head-wise input projections without bias,
dropout and a group norm over each head's output.

Layouts. The cell's external ``recurrent_kernel`` is ``(K, D, 4, D)``
(heads, in, gate, out) with the gates in the order i, f, z, o, ours;
``r = recurrent_kernel.reshape(K, D, 4D)``. Its ``bias`` is ``(K, 4, D)``;
``b = bias.transpose(1, 0, 2).reshape(4H)``, gate-major as our ``4H`` axis.
Its input ``Wx`` is gate-major then head-major too (``input_shape="BSGNH"``).
The cell's ``function="slstm"`` is the sigmoid forget gate, ours by
default. Its state is one ``(4, B, H)`` tensor in the order h, c, n, m,
:class:`jaxlstm.SLSTMState`'s.

The layer's projections are ``(K, D, D)`` each (heads, out, in); they become
the diagonal blocks of ``w_x (H, 4H)``. Note that ``sLSTMLayer.forward`` puts
the output of its module ``fgate`` in the *input* gate's slot and that of
``igate`` in the forget gate's (``i, f = self.fgate(x), self.igate(x)``);
the converter follows what the layer computes, not the modules' names.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxlstm._src.cells.slstm import SLSTMParams, SLSTMState

_SUPPORTED = "xlstm's sLSTMCell (any backend) or sLSTMLayer"


def _np(t: Any) -> np.ndarray:
  """A tensor (or array) as a NumPy array of the same dtype; bfloat16 through float32, which is exact."""
  if hasattr(t, "detach"):
    t = t.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
      return t.float().numpy().astype(jnp.bfloat16)
    return t.numpy().copy()
  return np.asarray(t)


def _kind(module: Any) -> str:
  """``"cell"`` or ``"layer"``; a TypeError for anything else."""
  try:
    from xlstm.blocks.slstm.cell import sLSTMCellBase
    from xlstm.blocks.slstm.layer import sLSTMLayer
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("jaxlstm.interop.xlstm needs NX-AI's xlstm package: pip install xlstm") from e
  if isinstance(module, sLSTMLayer):
    return "layer"
  if isinstance(module, sLSTMCellBase):
    return "cell"
  raise TypeError(f"module must be {_SUPPORTED}; got {type(module).__module__}.{type(module).__name__}")


def _cell_arrays(cell: Any) -> tuple[np.ndarray, np.ndarray]:
  """``(r (K, D, 4D), b (4H,))`` of an xlstm ``sLSTMCell``, whatever its backend's internal layout."""
  config = cell.config
  if config.function != "slstm":
    raise ValueError(f"the xlstm cell computes function={config.function!r}; only 'slstm' is an sLSTM")
  K, D = config.num_heads, config.hidden_size // config.num_heads
  r = _np(cell.recurrent_kernel[:])  # (K, D, 4, D): head, in, gate, out
  b = _np(cell.bias[:])  # (K, 4, D): head, gate, unit
  return r.reshape(K, D, 4 * D), b.transpose(1, 0, 2).reshape(4 * K * D)


def from_xlstm(module: Any) -> SLSTMParams:
  """Converts an xlstm sLSTM cell or layer to :class:`jaxlstm.SLSTMParams` (sigmoid forget gate).

  Args:
    module: an ``xlstm.blocks.slstm.cell.sLSTMCell`` (``vanilla`` or ``cuda``
      backend), or an ``sLSTMLayer`` built with ``conv1d_kernel_size=0``.

  Returns:
    :class:`jaxlstm.SLSTMParams` in the module's dtype, with its
    ``num_heads``. For a cell, ``w_x`` is the identity ``(4H, 4H)``: the
    input is the cell's own input, the gates' pre-activations. For a layer,
    ``w_x (H, 4H)`` holds its head-wise projections as diagonal blocks, and
    the params compute the output of its cell, ``y`` before the layer's
    group norm (and dropout), which are not part of the recurrence.

  Raises:
    TypeError: for any other module.
    ValueError: a layer with a convolution (``conv1d_kernel_size > 0``),
      which the sLSTM cell does not have, or a cell of another ``function``.

  Example:
    >>> from xlstm.blocks.slstm.layer import sLSTMLayer, sLSTMLayerConfig
    >>> from jaxlstm.interop.xlstm import from_xlstm
    >>> layer = sLSTMLayer(sLSTMLayerConfig(embedding_dim=8, num_heads=2, conv1d_kernel_size=0,
    ...                                     backend="vanilla", dtype="float32"))
    >>> params = from_xlstm(layer)
    >>> params.w_x.shape, params.r.shape, params.num_heads, params.forget_gate
    ((8, 32), (2, 4, 16), 2, 'sigmoid')
    >>> from_xlstm(layer.slstm_cell).w_x.shape  # a cell reads the gates' pre-activations
    (32, 32)
  """
  kind = _kind(module)
  cell = module if kind == "cell" else module.slstm_cell
  r, b = _cell_arrays(cell)
  K = cell.config.num_heads
  H = cell.config.hidden_size
  D = H // K
  if kind == "cell":
    w_x = np.eye(4 * H, dtype=r.dtype)
  else:
    if module.config.conv1d_kernel_size > 0:
      raise ValueError(
        f"module has a causal convolution (conv1d_kernel_size={module.config.conv1d_kernel_size}) "
        f"before its i and f gates, which the sLSTM cell does not have; convert an sLSTMLayer built "
        f"with conv1d_kernel_size=0, or its slstm_cell"
      )
    # The layer's forward puts fgate's output in the input gate's slot and igate's in the forget gate's.
    projections = [module.fgate, module.igate, module.zgate, module.ogate]  # gate slots i, f, z, o
    w_x = np.zeros((H, 4, K, D), r.dtype)  # (in, gate, head, out)
    for g, proj in enumerate(projections):
      w = _np(proj.weight)  # (K, D_out, D_in)
      if w.shape != (K, D, D):
        raise ValueError(f"module's gate projections must be (num_heads, D, D) = {(K, D, D)}; got {w.shape}")
      for k in range(K):
        w_x[k * D : (k + 1) * D, g, k, :] = w[k].T
    w_x = w_x.reshape(H, 4 * H)
  return SLSTMParams(
    w_x=jnp.asarray(w_x), r=jnp.asarray(r), b=jnp.asarray(b.astype(r.dtype)), num_heads=K, forget_gate="sigmoid"
  )


def from_xlstm_state(state: Any) -> SLSTMState:
  """An xlstm sLSTM state, one ``(4, B, H)`` tensor (h, c, n, m), as :class:`jaxlstm.SLSTMState`.

  Example:
    >>> from jaxlstm.interop.xlstm import from_xlstm_state, to_xlstm_state
    >>> state = from_xlstm_state(np.zeros((4, 2, 8), np.float32))
    >>> state._fields, state.m.shape, to_xlstm_state(state).shape
    (('h', 'c', 'n', 'm'), (2, 8), (4, 2, 8))
  """
  a = _np(state)
  if a.ndim < 1 or a.shape[0] != 4:
    raise ValueError(f"state must have shape (4, B, H), the fields h, c, n, m; got {a.shape}")
  return SLSTMState(*(jnp.asarray(a[k]) for k in range(4)))


def to_xlstm_state(state: SLSTMState) -> np.ndarray:
  """:class:`jaxlstm.SLSTMState` as xlstm's ``(4, B, H)`` NumPy array (``torch.from_numpy`` takes it).

  Example:
    >>> from jaxlstm.interop.xlstm import to_xlstm_state
    >>> params = jaxlstm.slstm_init(jax.random.key(0), 3, 8)
    >>> to_xlstm_state(jaxlstm.slstm_zero_state(params, (2,))).shape
    (4, 2, 8)
  """
  if not isinstance(state, SLSTMState):
    raise TypeError(f"state must be a jaxlstm.SLSTMState; got {type(state).__name__}")
  return np.stack([np.asarray(leaf) for leaf in state])
