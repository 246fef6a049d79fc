r"""Weights to and from Haiku's recurrent cores: ``hk.LSTM`` and ``hk.VanillaRNN``; ``hk.GRU`` is refused.

Haiku's params are a plain dict from module paths to that module's arrays,
as ``transformed.init`` returns it, so nothing here needs Haiku except the
state helpers. :func:`from_haiku` takes the whole dict (with ``name=``, the
core's module path, when the dict holds more than one core) or one core's
own entry; :func:`to_haiku` returns the dict that ``transformed.apply``
takes.

Layouts, as dm-haiku 0.0.17 defines them (``haiku/_src/recurrent.py``):

* ``hk.LSTM``: one ``hk.Linear`` on ``[x, h]``, ``{name}/linear`` with
  ``w (I+H, 4H)`` and ``b (4H,)``, gates in the order **i, g, f, o**, and a
  **+1 added to the forget gate at run time**, ``f = sigmoid(z_f + 1)``. So
  ``w_x = w[:I]``, ``w_h = w[I:]``, the gate blocks are reordered to our
  i, f, g, o, and the +1 is folded into our forget bias: :func:`from_haiku`
  adds 1 to that block, :func:`to_haiku` subtracts it. That sum rounds like
  any float sum: ``from_haiku(to_haiku(p))`` gives ``p`` back bit for bit
  except where a forget bias is below 0.5 (for ``b_f >= 0.5``, ``b_f - 1`` is
  exact), and there within half an ulp of ``b_f - 1``. Our init's forget
  bias of 1 and Haiku's of 0 convert exactly.
* ``hk.VanillaRNN``: ``{name}/linear`` (``w (I, H)``, ``b``) on ``x`` and
  ``{name}/linear_1`` (``w (H, H)``, and ``b`` with ``double_bias=True``, the
  default) on ``h``, and always relu: ``RNNParams(activation="relu")`` with
  ``b = b_x + b_h``. :func:`to_haiku` writes ``b`` on the input side and
  zeros on the recurrent one, so the round trip is exact; it refuses tanh
  params, which no Haiku core computes.
* ``hk.GRU`` (``{name}`` with ``w_i (I, 3H)``, ``w_h (H, 3H)``, ``b (3H,)``,
  gates z, r, a) is the formulation of Cho et al. (2014) that resets ``h``
  *before* the recurrent matmul, ``a = tanh(x W_ia + (r * h) W_ha + b_a)``,
  and updates ``h' = (1 - z) h + z a``. jaxlstm's GRU is PyTorch's, which
  resets *after* it, ``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``. No
  weights make one compute the other (unless ``W_ha = 0``), so both
  directions refuse a GRU; running Haiku's would take a cell of its own,
  added with :func:`jaxlstm.register_cell`. Keras' ``GRU(reset_after=False)``
  is the same formulation, refused by :mod:`jaxlstm.interop.keras` too.

States. Haiku's ``LSTMState(hidden, cell)`` is our :class:`jaxlstm.LSTMState`
``(h, c)`` in the same order; the VanillaRNN's state is ``h``. Convert with
:func:`from_haiku_state` and :func:`to_haiku_state`. Haiku's cores take
``(B, I)`` or ``(I,)`` inputs; ``hk.dynamic_unroll`` is time-major.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxlstm._src.cells.gru import GRUParams
from jaxlstm._src.cells.lstm import LSTMParams, LSTMState
from jaxlstm._src.cells.registry import is_cell_params
from jaxlstm._src.cells.rnn import RNNParams, RNNState
from jaxlstm.interop import _common

# Our i, f, g, o blocks, in Haiku's order i, g, f, o (and the inverse permutation, which is the same).
_HAIKU_ORDER = (0, 2, 1, 3)
_DEFAULT_NAMES = {LSTMParams: "lstm", RNNParams: "vanilla_rnn"}
_GRU_REFUSAL = (
  "Haiku's GRU resets h before the recurrent matmul, a = tanh(x W_ia + (r * h) W_ha + b_a) (Cho et "
  "al., 2014), where jaxlstm's GRU (PyTorch's) resets after it, n = tanh(x W_in + b_in + r * (h W_hn + "
  "b_hn)); no weights make one compute the other, so it cannot be converted exactly. Running Haiku's "
  "GRU in jaxlstm would need a cell of that formulation, added with jaxlstm.register_cell"
)


def _haiku():
  try:
    import haiku
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("jaxlstm.interop.haiku needs Haiku: pip install dm-haiku") from e
  return haiku


def _reorder(a: np.ndarray) -> np.ndarray:
  """The four gate blocks of the last axis swapped between our order i, f, g, o and Haiku's i, g, f, o."""
  return np.concatenate([np.split(a, 4, axis=-1)[k] for k in _HAIKU_ORDER], axis=-1)


def _is_arrays(d: Any) -> bool:
  """Whether ``d`` is one module's entry: a mapping of parameter names to arrays."""
  return isinstance(d, Mapping) and all(hasattr(v, "shape") for v in d.values())


def _get(entry: Mapping, label: str, leaf: str) -> np.ndarray:
  if leaf not in entry:
    raise ValueError(f"{label} must hold {leaf!r}; got keys {sorted(entry)}")
  return _common.np_array(entry[leaf])


def _cores(params: Mapping) -> dict[str, str]:
  """The recurrent cores of a whole params dict, ``{module path: "lstm" | "rnn" | "gru"}``.

  A path ``P/linear`` with no ``P/linear_1`` beside it is an ``hk.LSTM``'s; with one, an ``hk.VanillaRNN``'s; an
  entry holding ``w_i`` and ``w_h`` is an ``hk.GRU``'s.
  """
  cores = {}
  for path, entry in params.items():
    if not isinstance(entry, Mapping):
      continue
    if {"w_i", "w_h"} <= set(entry):
      cores[path] = "gru"
    elif path.endswith("/linear"):
      prefix = path[: -len("/linear")]
      cores[prefix] = "rnn" if f"{prefix}/linear_1" in params else "lstm"
  return cores


def _lstm(label: str, entry: Mapping) -> LSTMParams:
  w, b = _get(entry, label, "w"), _get(entry, label, "b")
  if b.ndim != 1 or b.shape[0] % 4 or w.ndim != 2 or w.shape[1] != b.shape[0] or w.shape[0] <= b.shape[0] // 4:
    raise ValueError(
      f"{label} must be an hk.LSTM's linear, w (I+H, 4H) and b (4H,) with I >= 1; got w "
      f"{tuple(w.shape)} and b {tuple(b.shape)}"
    )
  H = b.shape[0] // 4
  w = _reorder(w)
  b = _reorder(b)
  # Haiku adds 1 to the forget gate at run time; ours keeps it in the bias.
  b[H : 2 * H] += np.asarray(1, b.dtype)
  return LSTMParams(w[:-H].copy(), w[-H:].copy(), b)


def _vanilla(prefix: str, params: Mapping) -> RNNParams:
  x_path, h_path = f"params[{prefix + '/linear'!r}]", f"params[{prefix + '/linear_1'!r}]"
  x_entry, h_entry = params[f"{prefix}/linear"], params[f"{prefix}/linear_1"]
  w_x, b, w_h = _get(x_entry, x_path, "w"), _get(x_entry, x_path, "b"), _get(h_entry, h_path, "w")
  H = w_x.shape[-1]
  _common.check_shape(f"{x_path}['b']", b, (H,))
  _common.check_shape(f"{h_path}['w']", w_h, (H, H), " (the hk.VanillaRNN's recurrent weights)")
  if "b" in h_entry:  # double_bias=True, Haiku's default
    b_h = _get(h_entry, h_path, "b")
    _common.check_shape(f"{h_path}['b']", b_h, (H,))
    b = b + b_h
  return RNNParams(w_x, w_h, b, activation="relu")


def from_haiku(params: Mapping, *, name: str | None = None) -> Any:
  """Converts the params of a Haiku ``hk.LSTM`` or ``hk.VanillaRNN`` to jaxlstm params.

  Args:
    params: what ``transformed.init`` returned (the whole dict, ``{"lstm/linear": {"w": ..., "b": ...}}``),
      or an ``hk.LSTM``'s own entry, ``params["lstm/linear"]``.
    name: the core's module path in the whole dict: ``"lstm"``, ``"vanilla_rnn"``, or for a core inside a
      module, ``"model/lstm"``. Needed only when the dict holds several cores.

  Returns:
    :class:`jaxlstm.LSTMParams` ``w_x (I, 4H)``, ``w_h (H, 4H)``, ``b (4H,)``
    (gates reordered to i, f, g, o, Haiku's +1 folded into the forget bias),
    or :class:`jaxlstm.RNNParams` ``w_x (I, H)``, ``w_h (H, H)``, ``b (H,)``
    with ``activation="relu"``, in the params' dtype.
    :func:`jaxlstm.lstm_step` on them computes the core; :func:`jaxlstm.lstm`
    with ``time_major=True`` computes ``hk.dynamic_unroll`` of it.

  Raises:
    ValueError: an ``hk.GRU``, whose formulation differs from jaxlstm's (see
      the module docstring); no core, several cores and no ``name``, or a
      ``name`` that is not one; an entry without the core's arrays or with
      the wrong shapes.
    TypeError: ``params`` is not a dict.

  Example:
    >>> import haiku as hk
    >>> from jaxlstm.interop.haiku import from_haiku
    >>> core = hk.without_apply_rng(hk.transform(lambda x, s: hk.LSTM(4)(x, s)))
    >>> x, s = jnp.ones((2, 3)), hk.LSTMState(jnp.zeros((2, 4)), jnp.zeros((2, 4)))
    >>> variables = core.init(jax.random.key(0), x, s)
    >>> list(variables), variables["lstm/linear"]["w"].shape
    (['lstm/linear'], (7, 16))
    >>> p = from_haiku(variables)
    >>> p.w_x.shape, p.w_h.shape, float(p.b[4:8].mean())  # Haiku's zero bias, +1 on the forget gate
    ((3, 16), (4, 16), 1.0)
    >>> h, _ = core.apply(variables, x, s)
    >>> bool(jnp.allclose(jaxlstm.lstm_step(p, jaxlstm.LSTMState(*s), x)[1], h, atol=1e-6))
    True
  """
  if not isinstance(params, Mapping):
    raise TypeError(f"params must be a Haiku params dict (what transformed.init returns); got {type(params).__name__}")
  if _is_arrays(params) and params:  # one module's own entry
    if {"w_i", "w_h"} <= set(params):
      raise ValueError(f"params are an hk.GRU's: {_GRU_REFUSAL}")
    if set(params) <= {"w", "b"}:
      return _common.to_jax(_lstm("params", params))
    raise ValueError(
      f"params must be a Haiku params dict, or an hk.LSTM's linear entry {{'w', 'b'}}; got keys {sorted(params)}"
    )
  cores = _cores(params)
  if name is None:
    if len(cores) != 1:
      what = "no hk.LSTM, hk.VanillaRNN or hk.GRU" if not cores else f"several cores, {sorted(cores)}"
      raise ValueError(f"params hold {what}; pass name=, the core's module path (got modules {sorted(params)})")
    ((name, kind),) = cores.items()
  elif name not in cores:
    raise ValueError(
      f"name={name!r} is not a recurrent core of params; its cores are {sorted(cores)} (modules {sorted(params)})"
    )
  else:
    kind = cores[name]
  if kind == "gru":
    raise ValueError(f"params[{name!r}] is an hk.GRU's: {_GRU_REFUSAL}")
  out = _lstm(f"params[{name + '/linear'!r}]", params[f"{name}/linear"]) if kind == "lstm" else _vanilla(name, params)
  return _common.to_jax(out)


def to_haiku(params: Any, *, name: str | None = None, double_bias: bool = True) -> dict:
  """Writes jaxlstm params as the params dict of a Haiku ``hk.LSTM`` or ``hk.VanillaRNN``.

  Args:
    params: :class:`jaxlstm.LSTMParams` without peepholes, layer norm or
      projection, or :class:`jaxlstm.RNNParams` with ``activation="relu"``
      (``hk.VanillaRNN`` is always relu).
    name: the core's module path; Haiku's default name, ``"lstm"`` or
      ``"vanilla_rnn"``, when ``None``.
    double_bias: the ``hk.VanillaRNN``'s ``double_bias``: whether its
      recurrent linear has a bias (written as zeros).

  Returns:
    ``{f"{name}/linear": {"w": ..., "b": ...}}`` for an LSTM (gates in
    Haiku's order i, g, f, o, the forget bias less Haiku's run-time +1), or
    ``{f"{name}/linear": {"w": w_x, "b": b}, f"{name}/linear_1": {"w": w_h,
    "b": 0}}`` for a VanillaRNN, in the params' dtype, for
    ``transformed.apply``.

  Raises:
    ValueError: GRU params (see the module docstring), a tanh RNN, or LSTM
      features Haiku's core does not have.
    TypeError: params of another cell, or a stack tuple.

  Example:
    >>> from jaxlstm.interop.haiku import from_haiku, to_haiku
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 4)
    >>> variables = to_haiku(params)
    >>> list(variables), float(variables["lstm/linear"]["b"].max())  # forget bias 1 - 1
    (['lstm/linear'], 0.0)
    >>> all(bool((a == b).all()) for a, b in zip(from_haiku(variables), params) if a is not None)
    True
    >>> to_haiku(jaxlstm.rnn_init(jax.random.key(0), 3, 4))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: params.activation is 'tanh' but hk.VanillaRNN has activation='relu'; ...
  """
  import jax.numpy as jnp

  if isinstance(params, GRUParams):
    raise ValueError(f"params are GRUParams: {_GRU_REFUSAL}")
  cls: type
  if isinstance(params, RNNParams):
    cls, peer = RNNParams, "hk.VanillaRNN"
  elif isinstance(params, LSTMParams):
    cls, peer = LSTMParams, "hk.LSTM"
  else:
    hint = (
      " (a stack tuple was given where one layer's params were expected)"
      if isinstance(params, (tuple, list)) and not is_cell_params(params)
      else ""
    )
    raise TypeError(
      f"params must be LSTMParams (for an hk.LSTM) or RNNParams (for an hk.VanillaRNN); got "
      f"{type(params).__name__}{hint}"
    )
  _common.check_cell_params("params", params, cls, peer)
  if cls is RNNParams:
    _common.check_activation("params", params, "relu", peer, "activation")
  f = _common.array_fields(params)
  GH = f["w_x"].shape[1]
  H = GH // _common.gates(cls)
  _common.check_shape("params.w_h", f["w_h"], (H, GH))
  _common.check_shape("params.b", f["b"], (GH,))
  for k, v in f.items():  # Haiku creates a core's params in one dtype, its input's
    _common.check_dtype(f"params.{k}", v, f["w_x"].dtype, f"{peer} (params in params.w_x's dtype)")
  name = _DEFAULT_NAMES[cls] if name is None else name
  if cls is RNNParams:
    out = {f"{name}/linear": {"w": f["w_x"], "b": f["b"]}, f"{name}/linear_1": {"w": f["w_h"]}}
    if double_bias:
      out[f"{name}/linear_1"]["b"] = np.zeros_like(f["b"])
  else:
    b = f["b"].copy()
    b[H : 2 * H] -= np.asarray(1, b.dtype)  # Haiku adds it back at run time
    out = {f"{name}/linear": {"w": _reorder(np.concatenate([f["w_x"], f["w_h"]], axis=0)), "b": _reorder(b)}}
  return {path: {k: jnp.asarray(v) for k, v in entry.items()} for path, entry in out.items()}


def from_haiku_state(state: Any) -> Any:
  """Converts a Haiku core's state to a jaxlstm state.

  Args:
    state: an ``hk.LSTMState(hidden, cell)``, or an ``hk.VanillaRNN``'s
      state ``h``; leaves ``(*batch, H)``.

  Returns:
    :class:`jaxlstm.LSTMState` ``(h, c)`` or :class:`jaxlstm.RNNState`.

  Raises:
    TypeError: for anything else (a tuple other than ``hk.LSTMState``, say).

  Example:
    >>> import haiku as hk
    >>> from jaxlstm.interop.haiku import from_haiku_state
    >>> state = from_haiku_state(hk.LSTMState(hidden=jnp.ones((2, 4)), cell=jnp.zeros((2, 4))))
    >>> type(state).__name__, float(state.h.sum())
    ('LSTMState', 8.0)
  """
  hk = _haiku()
  if isinstance(state, hk.LSTMState):
    return LSTMState(state.hidden, state.cell)
  if isinstance(state, (tuple, list, Mapping)) or not hasattr(state, "shape"):
    raise TypeError(f"state must be an hk.LSTMState or an hk.VanillaRNN's array h; got {type(state).__name__}")
  return RNNState(state)


def to_haiku_state(state: Any) -> Any:
  """Converts a jaxlstm state to a Haiku core's state; the inverse of :func:`from_haiku_state`.

  Args:
    state: :class:`jaxlstm.LSTMState` or :class:`jaxlstm.RNNState`.

  Returns:
    ``hk.LSTMState(hidden=h, cell=c)``, or ``state.h``.

  Raises:
    TypeError: for anything else.

  Example:
    >>> from jaxlstm.interop.haiku import to_haiku_state
    >>> to_haiku_state(jaxlstm.LSTMState(jnp.ones(4), jnp.zeros(4))).hidden.shape
    (4,)
  """
  if isinstance(state, LSTMState):
    return _haiku().LSTMState(hidden=state.h, cell=state.c)
  if isinstance(state, RNNState):
    return state.h
  raise TypeError(f"state must be LSTMState or RNNState; got {type(state).__name__}")
