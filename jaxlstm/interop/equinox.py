r"""Weights to and from Equinox cells: ``eqx.nn.LSTMCell`` and ``eqx.nn.GRUCell``.

Equinox is imported only when a function here is called.

Layouts, as Equinox 0.13 defines them. Its weights are ``(out, in)``, as
PyTorch's; ours are their transposes. The gate orders are ours:

* ``LSTMCell``: ``weight_ih (4H, I)``, ``weight_hh (4H, H)`` and one
  ``bias (4H,)`` (``None`` with ``use_bias=False``), gates i, f, g, o:
  ``w_x = weight_ih.T``, ``w_h = weight_hh.T``, ``b = bias``.
* ``GRUCell``: ``weight_ih (3H, I)``, ``weight_hh (3H, H)``, ``bias (3H,)``
  on the input side and ``bias_n (H,)``, gates r, z, n, with
  ``n = tanh(x W_in + b_in + r * (h W_hn + b_n))`` and
  ``h' = n + z (h - n)``: exactly our GRU (PyTorch's), with ``b = bias`` and
  ``b_hn = bias_n``.

With ``use_bias=False`` the cell has no biases; :func:`from_equinox` gives
zeros, and :func:`to_equinox` refuses nonzero ones rather than drop them.
Nothing else needs refusing: Equinox's cells have no peepholes, layer norm
or projection, and :func:`to_equinox` refuses params that have them.
Every conversion is a transpose, so ``from_equinox(to_equinox(p)) == p`` bit
for bit, and the other way round too.

States. Equinox's LSTM state is the tuple ``(h, c)``, our
:class:`jaxlstm.LSTMState` in the same order; its GRU state is ``h``. Its
cells are unbatched (``jax.vmap`` them); ours take any leading batch axes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxlstm._src.cells.gru import GRUParams, GRUState
from jaxlstm._src.cells.lstm import LSTMParams, LSTMState
from jaxlstm._src.cells.registry import is_cell_params
from jaxlstm.interop import _common

_SUPPORTED = "equinox.nn.LSTMCell or equinox.nn.GRUCell"


def _eqx():
  try:
    import equinox
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("jaxlstm.interop.equinox needs Equinox: pip install equinox") from e
  return equinox


def _kind(cell: Any, name: str = "cell") -> type:
  """The params class of a supported cell; a TypeError otherwise."""
  nn = _eqx().nn
  if isinstance(cell, nn.LSTMCell):
    return LSTMParams
  if isinstance(cell, nn.GRUCell):
    return GRUParams
  raise TypeError(f"{name} must be an {_SUPPORTED}; got {type(cell).__module__}.{type(cell).__name__}")


def from_equinox(cell: Any) -> Any:
  """Converts an Equinox cell's weights to jaxlstm params.

  Args:
    cell: an ``eqx.nn.LSTMCell`` or ``eqx.nn.GRUCell`` (either ``use_bias``).

  Returns:
    :class:`jaxlstm.LSTMParams` ``w_x (I, 4H)``, ``w_h (H, 4H)``, ``b (4H,)``,
    or :class:`jaxlstm.GRUParams` ``w_x (I, 3H)``, ``w_h (H, 3H)``,
    ``b (3H,)``, ``b_hn (H,)``, in the cell's dtype; biases are zeros for
    ``use_bias=False``. :func:`jaxlstm.lstm_step` on them computes ``cell``
    (on any batch), and :func:`jaxlstm.lstm` computes the cell scanned over a
    sequence.

  Raises:
    TypeError: for any other module.

  Example:
    >>> import equinox as eqx
    >>> from jaxlstm.interop.equinox import from_equinox
    >>> cell = eqx.nn.GRUCell(3, 4, key=jax.random.key(0))
    >>> p = from_equinox(cell)
    >>> p.w_x.shape, p.b_hn.shape
    ((3, 12), (4,))
    >>> x, h = jnp.ones(3), jnp.zeros(4)
    >>> bool(jnp.allclose(jaxlstm.gru_step(p, jaxlstm.GRUState(h), x)[1], cell(x, h), atol=1e-6))
    True
  """
  cls = _kind(cell)
  w_x = _common.np_array(cell.weight_ih).T.copy()  # (I, G*H)
  w_h = _common.np_array(cell.weight_hh).T.copy()  # (H, G*H)
  H = cell.hidden_size
  if cell.use_bias:
    b = _common.np_array(cell.bias)
    b_hn = _common.np_array(cell.bias_n) if cls is GRUParams else None
  else:
    b = np.zeros((w_x.shape[1],), w_x.dtype)
    b_hn = np.zeros((H,), w_x.dtype)
  out: GRUParams | LSTMParams
  if cls is GRUParams:
    assert b_hn is not None  # a GRU's, read or zero above
    out = GRUParams(w_x, w_h, b, b_hn)
  else:
    out = LSTMParams(w_x, w_h, b)
  return _common.to_jax(out)


def to_equinox(params: Any, *, use_bias: bool = True) -> Any:
  """Builds the Equinox cell that computes ``params``.

  Equinox modules are immutable, so this returns a new cell; put it into a
  model with ``eqx.tree_at``. The cell is built with ``eqx.filter_eval_shape``,
  so no random init runs.

  Args:
    params: :class:`jaxlstm.LSTMParams` without peepholes, layer norm or
      projection, or :class:`jaxlstm.GRUParams`.
    use_bias: the cell's ``use_bias``; with ``False``, ``b`` (and ``b_hn``)
      must be zero.

  Returns:
    An ``eqx.nn.LSTMCell`` or ``eqx.nn.GRUCell`` of the params' sizes and
    dtype, with ``weight_ih = w_x.T``, ``weight_hh = w_h.T``, ``bias = b``
    (and the GRU's ``bias_n = b_hn``).

  Raises:
    TypeError: params of another cell (RNN, minGRU...), or a stack tuple.
    ValueError: peepholes, layer norm or a projection, which Equinox's cell
      does not have, or a nonzero bias with ``use_bias=False``.

  Example:
    >>> from jaxlstm.interop.equinox import from_equinox, to_equinox
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 4)
    >>> cell = to_equinox(params)
    >>> type(cell).__name__, cell.weight_ih.shape
    ('LSTMCell', (16, 3))
    >>> all(bool((a == b).all()) for a, b in zip(from_equinox(cell), params) if a is not None)
    True
    >>> to_equinox(params, use_bias=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: params.b must be all zeros because the Equinox cell has use_bias=False; got max |b| = 1
  """
  import jax
  import jax.numpy as jnp

  eqx = _eqx()
  cls: type
  if isinstance(params, LSTMParams):
    cls, ctor = LSTMParams, eqx.nn.LSTMCell
  elif isinstance(params, GRUParams):
    cls, ctor = GRUParams, eqx.nn.GRUCell
  else:
    hint = (
      " (a stack tuple was given where one layer's params were expected)"
      if isinstance(params, (tuple, list)) and not is_cell_params(params)
      else ""
    )
    raise TypeError(f"params must be LSTMParams or GRUParams for an {_SUPPORTED}; got {type(params).__name__}{hint}")
  peer = f"equinox.nn.{ctor.__name__}"
  _common.check_cell_params("params", params, cls, peer)
  f = _common.array_fields(params)
  I, GH = f["w_x"].shape
  H = GH // _common.gates(cls)
  _common.check_shape("params.w_h", f["w_h"], (H, GH))
  _common.check_shape("params.b", f["b"], (GH,))
  if cls is GRUParams:
    _common.check_shape("params.b_hn", f["b_hn"], (H,))
  dtype = f["w_x"].dtype
  for k, v in f.items():  # an Equinox cell has one dtype, taken from w_x
    _common.check_dtype(f"params.{k}", v, dtype, f"{peer} (built in params.w_x's dtype)")
  if not use_bias:
    _common.check_zero("params.b", f["b"], "the Equinox cell has use_bias=False")
    if cls is GRUParams:
      _common.check_zero("params.b_hn", f["b_hn"], "the Equinox cell has use_bias=False")
  # Shapes only: the cell's own init would draw random weights only to overwrite them.
  shell = eqx.filter_eval_shape(lambda: ctor(I, H, use_bias=use_bias, dtype=dtype, key=jax.random.key(0)))
  fields = {"weight_ih": f["w_x"].T, "weight_hh": f["w_h"].T}
  if use_bias:
    fields["bias"] = f["b"]
    if cls is GRUParams:
      fields["bias_n"] = f["b_hn"]
  return eqx.tree_at(
    lambda c: [getattr(c, n) for n in fields], shell, [jnp.asarray(np.ascontiguousarray(v)) for v in fields.values()]
  )


def from_equinox_state(hidden: Any, cell: Any) -> Any:
  """Converts an Equinox cell's hidden state to a jaxlstm state.

  Args:
    hidden: ``(h, c)`` for an ``LSTMCell``, ``h`` for a ``GRUCell``; leaves
      ``(*batch, H)`` (a vmapped cell's states carry the batch axes).
    cell: the cell it belongs to.

  Returns:
    :class:`jaxlstm.LSTMState` ``(h, c)`` or :class:`jaxlstm.GRUState`.

  Raises:
    TypeError: for an unsupported cell, or a state that is not ``(h, c)`` for
      an LSTM cell and not one array for a GRU cell.

  Example:
    >>> import equinox as eqx
    >>> from jaxlstm.interop.equinox import from_equinox_state
    >>> cell = eqx.nn.LSTMCell(3, 4, key=jax.random.key(0))
    >>> state = from_equinox_state(cell(jnp.ones(3), (jnp.zeros(4), jnp.zeros(4))), cell)
    >>> type(state).__name__, state.c.shape
    ('LSTMState', (4,))
  """
  cls = _kind(cell)
  if cls is LSTMParams:
    if not (isinstance(hidden, (tuple, list)) and len(hidden) == 2):
      raise TypeError(f"hidden must be Equinox's LSTM state (h, c); got {type(hidden).__name__}")
    h, c = hidden
    return LSTMState(h, c)
  if isinstance(hidden, (tuple, list)):
    raise TypeError(f"hidden must be one array h for an equinox GRUCell; got a {type(hidden).__name__}")
  return GRUState(hidden)


def to_equinox_state(state: Any) -> Any:
  """Converts a jaxlstm state to an Equinox cell's hidden state; the inverse of :func:`from_equinox_state`.

  Args:
    state: :class:`jaxlstm.LSTMState` or :class:`jaxlstm.GRUState`.

  Returns:
    The tuple ``(h, c)`` for an ``LSTMState``, ``state.h`` for a ``GRUState``.

  Raises:
    TypeError: for anything else.

  Example:
    >>> from jaxlstm.interop.equinox import to_equinox_state
    >>> h, c = to_equinox_state(jaxlstm.LSTMState(jnp.ones(4), jnp.zeros(4)))
    >>> float(h.sum()), float(c.sum())
    (4.0, 0.0)
  """
  if isinstance(state, LSTMState):
    return (state.h, state.c)
  if isinstance(state, GRUState):
    return state.h
  raise TypeError(f"state must be LSTMState or GRUState; got {type(state).__name__}")
