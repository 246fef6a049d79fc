r"""Weights to and from PyTorch: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and their cells.

Layouts. PyTorch stores ``weight_ih (G*H, I)`` and ``weight_hh (G*H, P)``
(``out, in``); ours are their transposes, ``w_x (I, G*H)`` and ``w_h (P, G*H)``.
The gate order is the same: LSTM **i, f, g, o**, GRU **r, z, n**. PyTorch has
two biases, ``b_ih`` and ``b_hh``:

* LSTM and RNN: ``b = b_ih + b_hh``.
* GRU: the reset and update biases fold, ``b[:2H] = b_ih[:2H] + b_hh[:2H]``,
  but the candidate's recurrent bias sits inside the reset product,
  ``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``, so ``b[2H:] = b_in`` and
  ``b_hn`` is kept apart: exactly :class:`jaxlstm.GRUParams`.
* ``proj_size`` (LSTM): ``w_proj = weight_hr.T``, shape ``(H, P)``.
* ``nonlinearity`` (``nn.RNN``, ``nn.RNNCell``): ``"tanh"`` or ``"relu"``,
  stored as :attr:`jaxlstm.RNNParams.activation`. It is part of the model, so
  it travels with the params: ``jaxlstm.stack(from_torch(m), xs)`` computes
  relu for ``nn.RNN(nonlinearity="relu")``, and :func:`to_torch` refuses to
  write params into a module of the other nonlinearity.

:func:`to_torch` writes ``b`` into ``b_ih`` and zeros into ``b_hh`` (``b_hn``
into the last block of the GRU's ``b_hh``), so ``from_torch(to_torch(p, m))``
gives back ``p`` bit for bit; the other way round the bias sum can round.

Call settings. ``batch_first`` says how the inputs are laid out, not what the
model computes, so the params do not carry it: :func:`torch_options` returns
it as :func:`jaxlstm.stack`'s ``time_major``, and
``jaxlstm.stack(from_torch(m), xs, **torch_options(m))`` computes ``m(xs)``.
States move between PyTorch's ``(num_layers * num_directions, B, H)`` layout
and our per-layer tuple with :func:`from_torch_state` and
:func:`to_torch_state`. A packed sequence corresponds to ``lengths``.
Inter-layer ``dropout`` is a training-time setting whose random masks cannot be
reproduced; conversions match the module in ``eval()`` mode.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from jaxlstm._src.cells.gru import GRUParams, GRUState
from jaxlstm._src.cells.lstm import LSTMParams, LSTMState
from jaxlstm._src.cells.rnn import RNNParams, RNNState
from jaxlstm._src.stack import Bidirectional
from jaxlstm.interop import _common

_SUPPORTED = "torch.nn.LSTM, GRU, RNN, LSTMCell, GRUCell or RNNCell"
# The state type of each params type this module converts.
_STATE_TYPES: dict[type, type[LSTMState | GRUState | RNNState]] = {
  LSTMParams: LSTMState,
  GRUParams: GRUState,
  RNNParams: RNNState,
}


def _torch():
  try:
    import torch
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("jaxlstm.interop.torch needs PyTorch: pip install torch") from e
  return torch


def _kind(module: Any, name: str = "module") -> tuple[type, bool]:
  """``(params class, is_cell)`` for a supported module; a TypeError otherwise."""
  torch = _torch()
  nn = torch.nn
  # Exact classes first: nn.LSTM and nn.GRU are subclasses of nn.RNNBase, not of nn.RNN.
  for cls, params_cls, is_cell in (
    (nn.LSTM, LSTMParams, False),
    (nn.GRU, GRUParams, False),
    (nn.RNN, RNNParams, False),
    (nn.LSTMCell, LSTMParams, True),
    (nn.GRUCell, GRUParams, True),
    (nn.RNNCell, RNNParams, True),
  ):
    if isinstance(module, cls):
      return params_cls, is_cell
  raise TypeError(f"{name} must be a {_SUPPORTED}; got {type(module).__module__}.{type(module).__name__}")


def _np(t: Any) -> np.ndarray:
  """A tensor as a NumPy array of the same dtype (bfloat16 through float32, which is exact)."""
  torch = _torch()
  t = t.detach().cpu()
  if t.dtype == torch.bfloat16:
    import jax.numpy as jnp

    return t.float().numpy().astype(jnp.bfloat16)
  return t.numpy().copy()


def _suffixes(module: Any, is_cell: bool) -> list[list[str]]:
  """Parameter-name suffixes, one list (its directions) per layer."""
  if is_cell:
    return [[""]]
  dirs = ["", "_reverse"] if module.bidirectional else [""]
  return [[f"_l{k}{d}" for d in dirs] for k in range(module.num_layers)]


def _read(module: Any, cls: type, sfx: str) -> Any:
  """One direction of one layer, in our layout (NumPy); an RNN's ``nonlinearity`` becomes its ``activation``."""
  w_ih = _np(getattr(module, "weight_ih" + sfx))  # (G*H, I)
  w_hh = _np(getattr(module, "weight_hh" + sfx))  # (G*H, P)
  H = w_ih.shape[0] // _common.gates(cls)
  if module.bias:
    b_ih = _np(getattr(module, "bias_ih" + sfx))
    b_hh = _np(getattr(module, "bias_hh" + sfx))
  else:
    b_ih = b_hh = np.zeros((w_ih.shape[0],), w_ih.dtype)
  w_x, w_h = w_ih.T.copy(), w_hh.T.copy()
  if cls is GRUParams:
    b = np.concatenate([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H :]])
    return GRUParams(w_x, w_h, b, b_hh[2 * H :].copy())
  if cls is RNNParams:
    return RNNParams(w_x, w_h, b_ih + b_hh, activation=module.nonlinearity)
  w_proj = _np(getattr(module, "weight_hr" + sfx)).T.copy() if getattr(module, "proj_size", 0) else None
  return LSTMParams(w_x, w_h, b_ih + b_hh, w_proj=w_proj)


def from_torch(module: Any) -> Any:
  """Converts a PyTorch recurrent module's weights to jaxlstm params.

  Args:
    module: a ``torch.nn.LSTM``, ``GRU`` or ``RNN`` (any ``num_layers``,
      ``bidirectional``, ``bias``, ``batch_first``; ``proj_size`` for the
      LSTM), or an ``LSTMCell``, ``GRUCell`` or ``RNNCell``.

  Returns:
    For ``nn.LSTM``/``GRU``/``RNN``: a stack, one entry per layer (a
    :class:`jaxlstm.Bidirectional` pair when bidirectional) of
    :class:`jaxlstm.LSTMParams` ``w_x (I, 4H)``, ``w_h (P, 4H)``, ``b (4H,)``,
    ``w_proj (H, P)`` or None; :class:`jaxlstm.GRUParams` ``w_x (I, 3H)``,
    ``w_h (H, 3H)``, ``b (3H,)``, ``b_hn (H,)``; or :class:`jaxlstm.RNNParams`
    ``w_x (I, H)``, ``w_h (H, H)``, ``b (H,)`` with ``activation`` set to the
    module's ``nonlinearity``. ``jaxlstm.stack(params, xs,
    **torch_options(module))`` computes ``module(xs)``. For a cell: that
    cell's params, for :func:`jaxlstm.lstm_step` and friends. Arrays keep the
    module's dtype.

  Raises:
    TypeError: for any other module.

  Warns:
    UserWarning: when the module is in training mode with ``dropout > 0``,
    whose random masks the converted stack cannot reproduce.

  Example:
    >>> import torch
    >>> from jaxlstm.interop import from_torch
    >>> m = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True)
    >>> params = from_torch(m)
    >>> [p.w_x.shape for p in params]
    [(3, 16), (4, 16)]
    >>> from_torch(torch.nn.RNN(3, 4, nonlinearity="relu"))[0].activation
    'relu'
  """
  cls, is_cell = _kind(module)
  if not is_cell and module.dropout > 0 and module.training and module.num_layers > 1:
    warnings.warn(
      f"module.dropout={module.dropout} is active because the module is in training mode; the "
      "converted params match module.eval() (jaxlstm.stack's own dropout uses other random masks)",
      stacklevel=2,
    )
  layers = []
  for sfxs in _suffixes(module, is_cell):
    dirs = [_read(module, cls, s) for s in sfxs]
    layers.append(Bidirectional(*dirs) if len(dirs) == 2 else dirs[0])
  out = _common.to_jax(tuple(layers))
  return out[0] if is_cell else out


def torch_options(module: Any) -> dict[str, Any]:
  """Keyword arguments for :func:`jaxlstm.stack` that lay out the inputs as ``module`` does.

  Only settings of the call are returned: what the model computes, the RNN's
  ``nonlinearity`` included, is in the params from :func:`from_torch`.

  Args:
    module: a supported PyTorch module (see :func:`from_torch`).

  Returns:
    For ``nn.LSTM``/``GRU``/``RNN``: ``{"time_major": not module.batch_first}``,
    so that ``jaxlstm.stack(from_torch(module), xs, **torch_options(module))``
    computes ``module(xs)``. For a cell: ``{}``.

  Raises:
    TypeError: for an unsupported module.

  Example:
    >>> import torch
    >>> from jaxlstm.interop import torch_options
    >>> torch_options(torch.nn.RNN(3, 4, nonlinearity="relu"))
    {'time_major': True}
    >>> torch_options(torch.nn.GRUCell(3, 4))
    {}
  """
  _, is_cell = _kind(module)
  return {} if is_cell else {"time_major": not module.batch_first}


_TORCH_NAMES = {"w_x": "weight_ih", "w_h": "weight_hh", "w_proj": "weight_hr"}


def _numpy_dtype(dtype: Any) -> np.dtype:
  """NumPy's name for a torch dtype; bfloat16 is ml_dtypes' (JAX's) bfloat16."""
  import jax.numpy as jnp

  name = str(dtype).replace("torch.", "")
  return np.dtype(jnp.bfloat16) if name == "bfloat16" else np.dtype(name)


def _writes(module: Any, cls: type, sfx: str, name: str, p: Any, peer: str) -> list[tuple[str, np.ndarray]]:
  """Checks one direction's params against the module and returns ``[(torch name, value), ...]``."""
  proj = bool(getattr(module, "proj_size", 0))
  _common.check_cell_params(name, p, cls, peer, allow_proj=proj)
  if cls is RNNParams:
    _common.check_activation(name, p, module.nonlinearity, peer, "nonlinearity")
  if cls is LSTMParams and proj and p.w_proj is None:
    shape = tuple(getattr(module, "weight_hr" + sfx).T.shape)
    raise ValueError(
      f"{name}.w_proj must be an array of shape (H, P) = {shape} since module.proj_size={module.proj_size}; got None"
    )
  dtype = _numpy_dtype(getattr(module, "weight_ih" + sfx).dtype)
  fields = _common.array_fields(p)
  for f, v in fields.items():
    _common.check_dtype(f"{name}.{f}", v, dtype, peer)
  writes = []
  for f, torch_name in _TORCH_NAMES.items():
    torch_name += sfx
    if not hasattr(module, torch_name):  # weight_hr exists only with proj_size
      continue
    shape = tuple(getattr(module, torch_name).shape)
    _common.check_shape(f"{name}.{f}", fields[f], shape[::-1], f" (the transpose of module.{torch_name}, {shape})")
    writes.append((torch_name, fields[f].T))
  H = fields["w_x"].shape[1] // _common.gates(cls)
  b = fields["b"]
  _common.check_shape(f"{name}.b", b, (_common.gates(cls) * H,))
  b_hh = np.zeros_like(b)
  if cls is GRUParams:
    _common.check_shape(f"{name}.b_hn", fields["b_hn"], (H,))
    b_hh[2 * H :] = fields["b_hn"]
  if module.bias:
    writes += [("bias_ih" + sfx, b), ("bias_hh" + sfx, b_hh)]
  else:
    _common.check_zero(f"{name}.b", b, f"{peer} has bias=False")
    if cls is GRUParams:
      _common.check_zero(f"{name}.b_hn", fields["b_hn"], f"{peer} has bias=False")
  return writes


def to_torch(params: Any, module: Any) -> Any:
  """Writes jaxlstm params into an existing PyTorch module, in place.

  Every check runs before anything is written, so on an error the module is
  left unchanged.

  Args:
    params: for ``nn.LSTM``/``GRU``/``RNN``, a stack tuple with
      ``module.num_layers`` entries (:class:`jaxlstm.Bidirectional` pairs when
      the module is bidirectional); for a cell, one cell's params. Shapes and
      dtype must match the module's; LSTM params must have no peepholes or
      layer norm, and ``w_proj`` exactly when ``module.proj_size > 0``; RNN
      params must have ``activation`` equal to ``module.nonlinearity``.
    module: the module to overwrite (see :func:`from_torch` for the types).

  Returns:
    ``module``, with ``bias_ih = b`` and ``bias_hh = 0`` (for the GRU,
    ``bias_hh = (0, 0, b_hn)``).

  Raises:
    TypeError: for an unsupported module, a params type or structure that does
      not match it, or a dtype mismatch.
    ValueError: for a shape mismatch, LSTM features that PyTorch lacks, an RNN
      activation other than ``module.nonlinearity``, or a nonzero bias when
      ``module.bias`` is False (never dropped silently).

  Example:
    >>> import torch
    >>> from jaxlstm.interop import to_torch
    >>> params = jaxlstm.stack_init(jax.random.key(0), 3, 4, 2, cell="rnn", activation="relu")
    >>> m = to_torch(params, torch.nn.RNN(3, 4, num_layers=2, nonlinearity="relu"))
    >>> np.array_equal(m.weight_ih_l0.detach().numpy().T, params[0].w_x)
    True
    >>> to_torch(params, torch.nn.RNN(3, 4, num_layers=2))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: params[0].activation is 'relu' but module (RNN) has nonlinearity='tanh'; ...
  """
  torch = _torch()
  cls, is_cell = _kind(module)
  peer = f"module ({type(module).__name__})"
  suffixes = _suffixes(module, is_cell)
  if is_cell:
    entries = [[("params", params)]]
  else:
    _common.check_stack("params", params, module.num_layers, peer)
    entries = [_common.directions(f"params[{k}]", layer, module.bidirectional, peer) for k, layer in enumerate(params)]
  writes = []
  for sfxs, dirs in zip(suffixes, entries):
    for sfx, (name, p) in zip(sfxs, dirs):
      writes += _writes(module, cls, sfx, name, p, peer)
  with torch.no_grad():
    for torch_name, value in writes:
      target = getattr(module, torch_name)
      src = torch.from_numpy(
        np.ascontiguousarray(value.astype(np.float32) if value.dtype.name == "bfloat16" else value)
      )
      target.copy_(src.to(target.dtype))
  return module


def _num_dirs(module: Any) -> int:
  return 2 if module.bidirectional else 1


def from_torch_state(hx: Any, module: Any) -> Any:
  """Converts a PyTorch hidden state to jaxlstm states.

  Args:
    hx: what ``module`` takes or returns as its state: ``(h, c)`` for an LSTM,
      ``h`` otherwise. For ``nn.LSTM``/``GRU``/``RNN``, ``h`` is
      ``(num_layers * num_directions, B, P)`` (``(…, P)`` unbatched) and ``c``
      is ``(…, B, H)``, ordered layer 0 forward, layer 0 backward, layer 1
      forward, … For a cell, ``h (B, H)`` and ``c (B, H)``.
    module: the module the state belongs to.

  Returns:
    For a sequence module, a tuple with one state per layer
    (:class:`jaxlstm.LSTMState`, ``GRUState`` or ``RNNState``, or a
    :class:`jaxlstm.Bidirectional` pair of them), for
    :func:`jaxlstm.stack`'s ``states``. For a cell, that cell's state.

  Raises:
    TypeError: for an unsupported module, or ``hx`` not ``(h, c)`` for an
      LSTM and not one tensor otherwise.
    ValueError: when the leading axis is not ``num_layers * num_directions``.

  Example:
    >>> import torch
    >>> from jaxlstm.interop import from_torch_state
    >>> m = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True)
    >>> states = from_torch_state(torch.zeros(4, 5, 4), m)
    >>> len(states), states[1].backward.h.shape
    (2, (5, 4))
  """
  import jax.numpy as jnp

  cls, is_cell = _kind(module)
  state_cls = _STATE_TYPES[cls]
  if cls is LSTMParams:
    if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
      raise TypeError(f"hx must be a pair (h, c) for {type(module).__name__}; got {type(hx).__name__}")
    leaves = [jnp.asarray(_np(t)) for t in hx]
  else:
    if isinstance(hx, (tuple, list)):
      raise TypeError(f"hx must be one tensor h for {type(module).__name__}; got a {type(hx).__name__}")
    leaves = [jnp.asarray(_np(hx))]
  if is_cell:
    return state_cls(*leaves)
  D = _num_dirs(module)
  n = module.num_layers * D
  for name, leaf in zip(("h", "c"), leaves):
    if leaf.ndim not in (2, 3) or leaf.shape[0] != n:
      raise ValueError(
        f"hx's {name} must have shape (num_layers * num_directions, B, F) with a leading {n}; got {tuple(leaf.shape)}"
      )
  layers = []
  for k in range(module.num_layers):
    dirs = [state_cls(*(leaf[k * D + d] for leaf in leaves)) for d in range(D)]
    layers.append(Bidirectional(*dirs) if D == 2 else dirs[0])
  return tuple(layers)


def to_torch_state(states: Any, module: Any) -> Any:
  """Converts jaxlstm states to PyTorch's layout; the inverse of :func:`from_torch_state`.

  Args:
    states: the states tuple of :func:`jaxlstm.stack` (one entry per layer),
      or one cell's state for a cell module.
    module: the module the state is for.

  Returns:
    ``(h, c)`` tensors for an LSTM, else ``h``, on the CPU with the states'
    dtype: ``(num_layers * num_directions, B, F)`` for a sequence module.

  Raises:
    TypeError: for an unsupported module, or states of the wrong type or
      structure (e.g. not :class:`jaxlstm.Bidirectional` pairs for a
      bidirectional module).
    ValueError: when the number of layers differs from ``module.num_layers``.

  Example:
    >>> import torch
    >>> from jaxlstm.interop import to_torch_state
    >>> m = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True)
    >>> states = tuple(jaxlstm.zero_state(p, (5,)) for p in jaxlstm.from_torch(m))
    >>> h_n, c_n = to_torch_state(states, m)
    >>> tuple(h_n.shape), tuple(c_n.shape)
    ((2, 5, 4), (2, 5, 4))
  """
  torch = _torch()
  cls, is_cell = _kind(module)
  state_cls = _STATE_TYPES[cls]

  def tensor(x):
    return torch.from_numpy(np.ascontiguousarray(_common.np_array(x)))

  def check(name, s):
    if not isinstance(s, state_cls):
      raise TypeError(f"{name} must be {state_cls.__name__} for {type(module).__name__}; got {type(s).__name__}")
    return s

  if is_cell:
    s = check("states", states)
    return tuple(tensor(x) for x in s) if cls is LSTMParams else tensor(s.h)
  peer = f"module ({type(module).__name__})"
  if not isinstance(states, (tuple, list)) or isinstance(states, (state_cls, Bidirectional)):
    raise TypeError(f"states must be a tuple with one state per layer for {peer}; got {type(states).__name__}")
  if len(states) != module.num_layers:
    raise ValueError(f"states must have {module.num_layers} layers to match {peer}; got {len(states)}")
  flat = []
  for k, layer in enumerate(states):
    for name, s in _common.directions(f"states[{k}]", layer, module.bidirectional, peer):
      flat.append(check(name, s))
  stacked = [torch.stack([tensor(s[i]) for s in flat]) for i in range(len(state_cls._fields))]
  return tuple(stacked) if cls is LSTMParams else stacked[0]
