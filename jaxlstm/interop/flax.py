r"""Weights to and from Flax cells, Linen and NNX: ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell``,
and Linen's ``ConvLSTMCell``.

Flax is imported only when a function here is called. Flax kernels are
``(in, out)`` like ours.

Linen cells hold no weights: :func:`from_flax` reads them from the variables
that ``cell.init`` returned (``{"params": ...}`` or the inner dict, also
``nn.RNN(cell)``'s ``{"params": {"cell": ...}}``), and :func:`to_flax` returns
a new ``{"params": ...}`` dict. NNX cells hold their weights: :func:`from_flax`
reads them and :func:`to_flax` writes them in place.

Layouts, as Flax 0.12 defines them:

* ``LSTMCell`` (Linen, NNX) and Linen's ``OptimizedLSTMCell``: one ``Dense``
  per gate, ``ii, if, ig, io`` (NNX: ``if_``) on the input without bias and
  ``hi, hf, hg, ho`` on ``h`` with bias. ``w_x`` concatenates the input
  kernels in the order i, f, g, o, ``w_h`` the recurrent ones, and ``b`` the
  recurrent biases.
* NNX ``OptimizedLSTMCell``: fused ``dense_i`` ``(I, 4H)`` (no bias) and
  ``dense_h`` ``(H, 4H)`` with bias ``(4H,)``, gates i, f, g, o: copied as
  they are.
* Linen ``GRUCell``: ``ir, iz, in`` with bias, ``hr, hz`` without and ``hn``
  with bias, and ``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``: exactly
  our GRU, with ``b = (b_ir, b_iz, b_in)`` and ``b_hn`` from ``hn``.
* NNX ``GRUCell``: fused ``dense_i`` ``(I, 3H)`` with bias and ``dense_h``
  ``(H, 3H)`` without, gates r, z, n, and ``n = tanh(x W_in + b_in + r * (h
  W_hn))``: our GRU with ``b_hn = 0``. :func:`to_flax` therefore refuses params
  with a nonzero ``b_hn`` for it: no NNX ``GRUCell`` computes that function.
* ``SimpleCell``: ``i`` (NNX ``dense_i``) with bias and ``h`` (``dense_h``)
  without: ``RNNParams``; ``residual=False`` only. Its ``activation_fn``,
  ``tanh`` or ``relu``, is stored as :attr:`jaxlstm.RNNParams.activation`:
  it is part of the model, so it travels with the params, and
  :func:`to_flax` refuses to write params into a cell of the other
  activation.

* Linen ``ConvLSTMCell`` (Flax 0.12 has no NNX one): two ``Conv``, ``ih`` on
  the input and ``hh`` on ``h``, each ``(*kernel_size, in, 4F)`` with a bias,
  gates **i, g, f, o**, and ``f = sigmoid(z_f + 1)``: Flax adds 1 to the
  forget gate at run time. :func:`from_flax` reorders the gates to our i, f,
  g, o, sums the two biases into ``b`` and returns params with
  ``forget_offset=1.0``, the same function; :func:`to_flax` takes such params
  only (an offset folded into ``b`` would round, and round trips are exact).
  Flax applies its ``strides`` and ``padding`` to ``hh`` too, where Keras and
  jaxlstm keep the recurrent convolution ``"same"`` with stride 1, so only
  ``padding="SAME"`` with unit strides converts, both ways; other settings
  raise.

Carries. Flax's LSTM carry is ``(c, h)``, ours is ``LSTMState(h, c)``; convert
with :func:`from_flax_carry` and :func:`to_flax_carry`. Both libraries update
``h' = (1 - z) n + z h`` in the GRU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxlstm._src.cells.convlstm import ConvLSTM1DParams, ConvLSTM2DParams, ConvLSTMParams, ConvLSTMState
from jaxlstm._src.cells.gru import GRUParams, GRUState
from jaxlstm._src.cells.lstm import LSTMParams, LSTMState
from jaxlstm._src.cells.rnn import RNNParams, RNNState
from jaxlstm.interop import _common

_SUPPORTED = "flax LSTMCell, OptimizedLSTMCell, GRUCell or SimpleCell (Linen or NNX), or Linen's ConvLSTMCell"
_LSTM_GATES = ("i", "f", "g", "o")


def _flax():
  try:
    from flax import linen, nnx
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("jaxlstm.interop.flax needs Flax: pip install flax") from e
  return linen, nnx


def _kind(cell: Any, name: str = "cell") -> tuple[str, str, type]:
  """``(api, layout, params class)``: api ``"linen"`` or ``"nnx"``; a TypeError otherwise."""
  linen, nnx = _flax()
  if isinstance(cell, linen.RNN):
    return _kind(cell.cell, f"{name}.cell")
  if isinstance(cell, linen.ConvLSTMCell):
    return "linen", "conv_lstm", _check_conv_cell(cell, name)
  table = [
    (linen.OptimizedLSTMCell, "linen", "lstm", LSTMParams),
    (linen.LSTMCell, "linen", "lstm", LSTMParams),
    (linen.GRUCell, "linen", "gru", GRUParams),
    (linen.SimpleCell, "linen", "simple", RNNParams),
    (nnx.OptimizedLSTMCell, "nnx", "fused_lstm", LSTMParams),
    (nnx.LSTMCell, "nnx", "lstm", LSTMParams),
    (nnx.GRUCell, "nnx", "fused_gru", GRUParams),
    (nnx.SimpleCell, "nnx", "simple", RNNParams),
  ]
  for cls, api, layout, params_cls in table:
    if isinstance(cell, cls):
      _check_cell(cell, params_cls, name)
      return api, layout, params_cls
  raise TypeError(f"{name} must be a {_SUPPORTED}; got {type(cell).__module__}.{type(cell).__name__}")


def _fn_name(fn: Any) -> str:
  name: str | None = getattr(fn, "__name__", None)
  if name:
    return name
  wrapped: str = getattr(getattr(fn, "__wrapped__", None), "__name__", repr(fn))
  return wrapped


def _check_cell(cell: Any, cls: type, name: str) -> None:
  act = _fn_name(cell.activation_fn)
  if cls is RNNParams:
    if act not in ("tanh", "relu"):
      raise ValueError(f"{name}.activation_fn must be tanh or relu; got {act}")
    if getattr(cell, "residual", False):
      raise ValueError(f"{name}.residual must be False: jaxlstm's RNN has no residual connection; got True")
    return
  if act != "tanh":
    raise ValueError(f"{name}.activation_fn must be tanh; got {act}")
  gate = _fn_name(cell.gate_fn)
  if gate != "sigmoid":
    raise ValueError(f"{name}.gate_fn must be sigmoid; got {gate}")


def _check_conv_cell(cell: Any, name: str) -> type:
  """The params type of a Linen ``ConvLSTMCell`` by its rank; raises for the settings jaxlstm does not compute."""
  rank = len(cell.kernel_size)
  if rank not in (1, 2):
    raise TypeError(f"{name} is a rank-{rank} ConvLSTMCell; jaxlstm has ConvLSTM1D and ConvLSTM2D cells only")
  if not isinstance(cell.padding, str) or cell.padding.upper() != "SAME":
    raise ValueError(
      f"{name}.padding must be 'SAME': Flax pads the recurrent convolution as the input one, "
      f"which keeps the carry's shape only with 'SAME'; got {cell.padding!r}"
    )
  if cell.strides is not None and any(s != 1 for s in cell.strides):
    raise ValueError(
      f"{name}.strides must be None or 1: Flax strides the recurrent convolution too, which "
      f"would shrink the carry at every step; got {cell.strides!r}"
    )
  return ConvLSTM1DParams if rank == 1 else ConvLSTM2DParams


# Flax's ConvLSTMCell gates i, g, f, o -> our i, f, g, o (the permutation is its own inverse).
_CONV_GATES = (0, 2, 1, 3)


def _conv_gates(a: np.ndarray) -> np.ndarray:
  return np.concatenate([np.split(a, 4, axis=-1)[g] for g in _CONV_GATES], axis=-1)


def _unwrap(cell: Any) -> Any:
  linen, _ = _flax()
  return cell.cell if isinstance(cell, linen.RNN) else cell


def _activation(cell: Any) -> str:
  """A ``SimpleCell``'s ``activation_fn`` by name, ``"tanh"`` or ``"relu"`` (checked by :func:`_kind`)."""
  return _fn_name(_unwrap(cell).activation_fn)


def _linen_tree(variables: Any, cell: Any) -> dict:
  """The cell's own params dict out of what ``init`` returned."""
  linen, _ = _flax()
  if variables is None:
    raise ValueError("variables must be given for a Linen cell (the dict that cell.init returned); got None")
  if not hasattr(variables, "keys"):
    raise TypeError(f"variables must be a dict of params; got {type(variables).__name__}")
  tree = variables["params"] if "params" in variables else variables
  if isinstance(cell, linen.RNN) and "cell" in tree:
    tree = tree["cell"]
  return tree


def _get(tree: dict, key: str, leaf: str) -> np.ndarray:
  try:
    return _common.np_array(tree[key][leaf])
  except (KeyError, TypeError):
    raise ValueError(
      f"variables['params'] must hold {key}/{leaf} for this cell; got keys "
      f"{sorted(tree.keys()) if hasattr(tree, 'keys') else type(tree).__name__}"
    ) from None


def _val(var: Any) -> np.ndarray:
  return _common.np_array(var[...])


def from_flax(cell: Any, variables: Any = None) -> Any:
  """Converts a Flax cell's weights to jaxlstm params.

  Args:
    cell: a Linen or NNX ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell`` or
      ``SimpleCell`` (or a Linen ``nn.RNN`` of one).
    variables: for a Linen cell, what ``cell.init`` returned (``{"params":
      ...}``, or the inner dict); ignored for NNX, whose cells hold their
      weights.

  Returns:
    :class:`jaxlstm.LSTMParams` ``w_x (I, 4H)``, ``w_h (H, 4H)``, ``b (4H,)``;
    :class:`jaxlstm.GRUParams` ``w_x (I, 3H)``, ``w_h (H, 3H)``, ``b (3H,)``,
    ``b_hn (H,)`` (zeros for NNX's ``GRUCell``); or :class:`jaxlstm.RNNParams`
    with ``activation``, the ``SimpleCell``'s ``activation_fn``. Run them with
    :func:`jaxlstm.lstm_step` and friends, or over a sequence with
    :func:`jaxlstm.lstm` (what ``nn.RNN(cell)`` computes).

  Raises:
    TypeError: for an unsupported cell.
    ValueError: for activations jaxlstm does not compute, or Linen variables
      without the cell's params.

  Example:
    >>> from flax import linen, nnx
    >>> from jaxlstm.interop import from_flax
    >>> cell = nnx.OptimizedLSTMCell(3, 4, rngs=nnx.Rngs(0))
    >>> p = from_flax(cell)
    >>> p.w_x.shape, p.w_h.shape, p.b.shape
    ((3, 16), (4, 16), (16,))
    >>> simple = linen.SimpleCell(4, activation_fn=jax.nn.relu)
    >>> x, h0 = jnp.ones((2, 3), jnp.float32), jnp.zeros((2, 4), jnp.float32)
    >>> variables = simple.init(jax.random.key(0), h0, x)
    >>> p = from_flax(simple, variables)
    >>> p.activation
    'relu'
    >>> _, h = jaxlstm.rnn_step(p, jaxlstm.RNNState(h0), x)
    >>> bool(jnp.allclose(h, simple.apply(variables, h0, x)[1]))
    True
  """
  api, layout, cls = _kind(cell)
  out: LSTMParams | GRUParams | RNNParams  # the converted params, of the cell's kind
  if api == "linen":
    tree = _linen_tree(variables, cell)
    if layout == "conv_lstm":
      inner = _unwrap(cell)
      w_x, w_h = _get(tree, "ih", "kernel"), _get(tree, "hh", "kernel")  # (*K, C, 4F), (*K, F, 4F)
      b = _get(tree, "ih", "bias") + _get(tree, "hh", "bias") if inner.use_bias else np.zeros(w_x.shape[-1:], w_x.dtype)
      r = w_x.ndim - 2
      return _common.to_jax(
        cls(
          _conv_gates(w_x),
          _conv_gates(w_h),
          _conv_gates(b),
          padding="same",
          strides=(1,) * r,
          dilation=(1,) * r,
          forget_offset=1.0,
        )
      )
    if layout == "lstm":
      w_x = np.concatenate([_get(tree, "i" + g, "kernel") for g in _LSTM_GATES], axis=1)
      w_h = np.concatenate([_get(tree, "h" + g, "kernel") for g in _LSTM_GATES], axis=1)
      b = np.concatenate([_get(tree, "h" + g, "bias") for g in _LSTM_GATES])
      out = LSTMParams(w_x, w_h, b)
    elif layout == "gru":
      w_x = np.concatenate([_get(tree, "i" + g, "kernel") for g in "rzn"], axis=1)
      w_h = np.concatenate([_get(tree, "h" + g, "kernel") for g in "rzn"], axis=1)
      b = np.concatenate([_get(tree, "i" + g, "bias") for g in "rzn"])
      out = GRUParams(w_x, w_h, b, _get(tree, "hn", "bias"))
    else:
      out = RNNParams(
        _get(tree, "i", "kernel"), _get(tree, "h", "kernel"), _get(tree, "i", "bias"), activation=_activation(cell)
      )
    return _common.to_jax(out)
  if layout == "lstm":
    gates = [("ii", "hi"), ("if_", "hf"), ("ig", "hg"), ("io", "ho")]
    out = LSTMParams(
      np.concatenate([_val(getattr(cell, i).kernel) for i, _ in gates], axis=1),
      np.concatenate([_val(getattr(cell, h).kernel) for _, h in gates], axis=1),
      np.concatenate([_val(getattr(cell, h).bias) for _, h in gates]),
    )
  elif layout == "fused_lstm":
    out = LSTMParams(_val(cell.dense_i.kernel), _val(cell.dense_h.kernel), _val(cell.dense_h.bias))
  elif layout == "fused_gru":
    b = _val(cell.dense_i.bias)
    out = GRUParams(_val(cell.dense_i.kernel), _val(cell.dense_h.kernel), b, np.zeros((b.shape[0] // 3,), b.dtype))
  else:
    out = RNNParams(
      _val(cell.dense_i.kernel), _val(cell.dense_h.kernel), _val(cell.dense_i.bias), activation=_activation(cell)
    )
  return _common.to_jax(out)


def flax_options(cell: Any) -> dict[str, Any]:
  """Keyword arguments for jaxlstm's steps and layers that run ``cell``'s params as Flax runs them.

  What a cell computes, a ``SimpleCell``'s ``activation_fn`` included, is in
  the params from :func:`from_flax`, so there is nothing to add for any
  supported cell; the function is kept so that every peer has the same
  ``*_options`` entry point. A Linen ``nn.RNN``'s own settings
  (``time_major``, ``reverse``) are not read: pass the matching arguments to
  :func:`jaxlstm.lstm` and friends.

  Args:
    cell: a cell that :func:`from_flax` accepts.

  Returns:
    ``{}``.

  Raises:
    TypeError: for an unsupported cell.
    ValueError: for a cell whose activations jaxlstm does not compute.

  Example:
    >>> from flax import linen
    >>> from jaxlstm.interop import flax_options
    >>> flax_options(linen.SimpleCell(4, activation_fn=jax.nn.relu))
    {}
  """
  _kind(cell)
  return {}


def _hidden_size(cell: Any, api: str) -> int:
  return cell.features if api == "linen" else cell.hidden_features


def to_flax(params: Any, cell: Any) -> Any:
  """Writes jaxlstm params into a Flax cell: a new variables dict for Linen, in place for NNX.

  Args:
    params: :class:`jaxlstm.LSTMParams` (no peepholes, layer norm or
      projection), :class:`jaxlstm.GRUParams` or :class:`jaxlstm.RNNParams`,
      matching the cell's kind, sizes and ``param_dtype``. For NNX's
      ``GRUCell``, ``b_hn`` must be zero (see the module docstring); for a
      ``SimpleCell``, ``activation`` must be its ``activation_fn``.
    cell: a cell that :func:`from_flax` accepts.

  Returns:
    For Linen, ``{"params": {...}}`` (``{"params": {"cell": {...}}}`` for an
    ``nn.RNN``), ready for ``cell.apply``; the split of ``b`` and the kernels
    is exact. For NNX, ``cell`` with its weights replaced.

  Raises:
    TypeError: for an unsupported cell, the wrong params type, or a dtype
      mismatch.
    ValueError: for a shape mismatch, an RNN activation other than the
      ``SimpleCell``'s, or features the cell cannot hold.

  Example:
    >>> from flax import linen, nnx
    >>> from jaxlstm.interop import to_flax
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 4, activation="relu")
    >>> variables = to_flax(params, linen.SimpleCell(4, activation_fn=jax.nn.relu))
    >>> np.array_equal(variables["params"]["h"]["kernel"], params.w_h)
    True
    >>> cell = to_flax(params, nnx.SimpleCell(3, 4, activation_fn=jax.nn.relu, rngs=nnx.Rngs(0)))
    >>> np.array_equal(cell.dense_i.kernel[...], params.w_x)
    True
    >>> to_flax(params, linen.SimpleCell(4))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: params.activation is 'relu' but flax SimpleCell has activation_fn='tanh'; ...
  """
  import jax.numpy as jnp

  api, layout, cls = _kind(cell)
  inner = _unwrap(cell)
  peer = f"flax {type(inner).__name__}"
  _common.check_cell_params("params", params, cls, peer)
  if layout == "conv_lstm":
    return _to_flax_conv(params, cell, inner, peer)
  if cls is RNNParams:
    _common.check_activation("params", params, _activation(cell), peer, "activation_fn")
  f = _common.array_fields(params)
  G = _common.gates(cls)
  H = _hidden_size(inner, api)
  I = f["w_x"].shape[0]
  if api == "nnx" and inner.in_features != I:
    raise ValueError(
      f"params.w_x must have shape ({inner.in_features}, {G * H}) to match "
      f"cell.in_features={inner.in_features}; got {f['w_x'].shape}"
    )
  _common.check_shape("params.w_x", f["w_x"], (I, G * H), f" to match the cell's {H} features")
  _common.check_shape("params.w_h", f["w_h"], (H, G * H))
  _common.check_shape("params.b", f["b"], (G * H,))
  if cls is GRUParams:
    _common.check_shape("params.b_hn", f["b_hn"], (H,))
  dtype = np.dtype(inner.param_dtype)
  for k, v in f.items():
    _common.check_dtype(f"params.{k}", v, dtype, "cell (param_dtype)")

  def split(a, n):
    return np.split(a, n, axis=-1)

  if api == "linen":
    if layout == "lstm":
      tree = {}
      for g, wx, wh, b in zip(_LSTM_GATES, split(f["w_x"], 4), split(f["w_h"], 4), split(f["b"], 4)):
        tree["i" + g] = {"kernel": wx}
        tree["h" + g] = {"kernel": wh, "bias": b}
    elif layout == "gru":
      tree = {}
      for g, wx, wh, b in zip("rzn", split(f["w_x"], 3), split(f["w_h"], 3), split(f["b"], 3)):
        tree["i" + g] = {"kernel": wx, "bias": b}
        tree["h" + g] = {"kernel": wh}
      tree["hn"]["bias"] = f["b_hn"]
    else:
      tree = {"i": {"kernel": f["w_x"], "bias": f["b"]}, "h": {"kernel": f["w_h"]}}
    tree = {k: {n: jnp.asarray(v) for n, v in d.items()} for k, d in tree.items()}
    linen, _ = _flax()
    return {"params": {"cell": tree} if isinstance(cell, linen.RNN) else tree}

  if layout == "fused_gru":
    _common.check_zero(
      "params.b_hn",
      f["b_hn"],
      "flax NNX's GRUCell has no recurrent candidate bias (it computes tanh(x W_in + b_in + r * (h W_hn)))",
    )
  if layout == "lstm":
    writes = []
    for (i, h), wx, wh, b in zip(
      [("ii", "hi"), ("if_", "hf"), ("ig", "hg"), ("io", "ho")],
      split(f["w_x"], 4),
      split(f["w_h"], 4),
      split(f["b"], 4),
    ):
      writes += [(getattr(cell, i).kernel, wx), (getattr(cell, h).kernel, wh), (getattr(cell, h).bias, b)]
  elif layout == "fused_lstm":
    writes = [(cell.dense_i.kernel, f["w_x"]), (cell.dense_h.kernel, f["w_h"]), (cell.dense_h.bias, f["b"])]
  elif layout == "fused_gru":
    writes = [(cell.dense_i.kernel, f["w_x"]), (cell.dense_i.bias, f["b"]), (cell.dense_h.kernel, f["w_h"])]
  else:
    writes = [(cell.dense_i.kernel, f["w_x"]), (cell.dense_i.bias, f["b"]), (cell.dense_h.kernel, f["w_h"])]
  for var, value in writes:
    var.set_value(jnp.asarray(value))
  return cell


def _to_flax_conv(params: ConvLSTMParams, cell: Any, inner: Any, peer: str) -> dict:
  """:func:`to_flax` for a Linen ``ConvLSTMCell``: every check first, then ``{"params": {"ih": ..., "hh": ...}}``."""
  import jax.numpy as jnp

  if params.forget_offset != 1.0:
    raise ValueError(
      f"params.forget_offset must be 1.0: {peer} adds 1 to the forget gate at run time; got "
      f"{params.forget_offset} (build the params with forget_offset=1.0, or fold the difference "
      f"into b yourself, which rounds)"
    )
  r = params.rank
  for field, want in (("padding", "same"), ("strides", (1,) * r), ("dilation", (1,) * r)):
    if getattr(params, field) != want:
      raise ValueError(
        f"params.{field} must be {want!r}: {peer} runs its recurrent convolution with its input "
        f"one's settings, which match jaxlstm's only for 'SAME' padding, unit strides and no "
        f"dilation; got {getattr(params, field)!r}"
      )
  f = _common.array_fields(params)
  K, F = tuple(inner.kernel_size), inner.features
  C = f["w_x"].shape[-2]
  _common.check_shape("params.w_x", f["w_x"], (*K, C, 4 * F), f" to match the cell's kernel_size={K} and {F} features")
  _common.check_shape("params.w_h", f["w_h"], (*K, F, 4 * F))
  dtype = np.dtype(inner.param_dtype)
  for k, v in f.items():
    _common.check_dtype(f"params.{k}", v, dtype, "cell (param_dtype)")
  ih, hh = {"kernel": _conv_gates(f["w_x"])}, {"kernel": _conv_gates(f["w_h"])}
  if inner.use_bias:
    ih["bias"], hh["bias"] = _conv_gates(f["b"]), np.zeros_like(f["b"])
  else:
    _common.check_zero("params.b", f["b"], f"{peer}.use_bias is False")
  tree = {"ih": {n: jnp.asarray(v) for n, v in ih.items()}, "hh": {n: jnp.asarray(v) for n, v in hh.items()}}
  linen, _ = _flax()
  return {"params": {"cell": tree} if isinstance(cell, linen.RNN) else tree}


def from_flax_carry(carry: Any, cell: Any) -> Any:
  """Converts a Flax carry to a jaxlstm state.

  Args:
    carry: ``(c, h)`` for an LSTM cell, ``h`` for the others; leaves
      ``(*batch, H)``.
    cell: the cell it belongs to.

  Returns:
    :class:`jaxlstm.LSTMState` ``(h, c)``, :class:`jaxlstm.GRUState` or
    :class:`jaxlstm.RNNState`.

  Raises:
    TypeError: for an unsupported cell, or a carry that is not ``(c, h)`` for
      an LSTM cell and not one array for the others.

  Example:
    >>> from flax import linen
    >>> from jaxlstm.interop import from_flax_carry
    >>> c, h = jnp.zeros((2, 4), jnp.float32), jnp.ones((2, 4), jnp.float32)
    >>> state = from_flax_carry((c, h), linen.LSTMCell(4))
    >>> type(state).__name__, bool((state.h == 1).all())
    ('LSTMState', True)
  """
  _, _, cls = _kind(cell)
  if cls is LSTMParams or issubclass(cls, ConvLSTMParams):
    if not (isinstance(carry, (tuple, list)) and len(carry) == 2):
      raise TypeError(f"carry must be Flax's LSTM carry (c, h); got {type(carry).__name__}")
    c, h = carry
    return LSTMState(h, c) if cls is LSTMParams else ConvLSTMState(h, c)
  if isinstance(carry, (tuple, list)):
    raise TypeError(f"carry must be one array h for {type(_unwrap(cell)).__name__}; got a {type(carry).__name__}")
  return GRUState(carry) if cls is GRUParams else RNNState(carry)


def to_flax_carry(state: Any) -> Any:
  """Converts a jaxlstm state to a Flax carry; the inverse of :func:`from_flax_carry`.

  Args:
    state: :class:`jaxlstm.LSTMState`, :class:`jaxlstm.GRUState`,
      :class:`jaxlstm.RNNState` or :class:`jaxlstm.ConvLSTMState`.

  Returns:
    ``(c, h)`` for an ``LSTMState(h, c)`` or a ``ConvLSTMState(h, c)``, else ``state.h``.

  Raises:
    TypeError: for anything else.

  Example:
    >>> from jaxlstm.interop import to_flax_carry
    >>> c, h = to_flax_carry(jaxlstm.LSTMState(jnp.ones((2, 4), jnp.float32), jnp.zeros((2, 4), jnp.float32)))
    >>> float(c.sum()), float(h.sum())
    (0.0, 8.0)
  """
  if isinstance(state, (LSTMState, ConvLSTMState)):
    return (state.c, state.h)
  if isinstance(state, (GRUState, RNNState)):
    return state.h
  raise TypeError(f"state must be LSTMState, GRUState, RNNState or ConvLSTMState; got {type(state).__name__}")
