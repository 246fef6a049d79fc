r"""Weights to and from Keras 3: ``LSTM``, ``GRU``, ``SimpleRNN``, ``ConvLSTM1D``, ``ConvLSTM2D``, ``Bidirectional``
and their cells.

Keras is imported only when a function here is called. With Keras 3, set
``os.environ["KERAS_BACKEND"]`` (for example to ``"jax"``) before the first
``import keras``.

Layouts. Keras kernels are ``(in, out)`` like ours: ``kernel (I, G*H)``,
``recurrent_kernel (H, G*H)``.

* LSTM: gates **i, f, c, o**, our i, f, g, o; one bias ``(4H,)``, copied as it
  is. ``unit_forget_bias`` only sets the initial value, so it needs nothing.
* GRU with ``reset_after=True`` (the Keras 3 default): gates **z, r, h**,
  reordered to our r, z, n. The bias is ``(2, 3H)``, an input row and a
  recurrent row; the recurrent candidate bias sits inside the reset product,
  ``hh = tanh(x W_h + b_ih + r * (h U_h + b_rh))``, which is PyTorch's and our
  GRU: ``b = (b_ir + b_rr, b_iz + b_rz, b_ih)`` and ``b_hn = b_rh``.
  Keras' update ``h' = z h + (1 - z) hh`` is ours.
* GRU with ``reset_after=False`` applies the reset gate *before* the recurrent
  matmul, ``(r * h) U_h``, where ours computes ``r * (h U_h)``. The two agree
  for every ``r`` only when ``U_h`` is diagonal, so such a layer is refused
  with a ValueError rather than converted wrongly.
* SimpleRNN: ``activation`` ``"tanh"`` or ``"relu"``, stored as
  :attr:`jaxlstm.RNNParams.activation`. It is part of the model, so it travels
  with the params (each layer of a list keeps its own), and :func:`to_keras`
  refuses to write params into a layer of the other activation.
* ConvLSTM1D, ConvLSTM2D: ``kernel (*kernel_size, C, 4F)`` and
  ``recurrent_kernel (*kernel_size, F, 4F)``, gates i, f, c, o, copied as
  they are into :class:`jaxlstm.ConvLSTM1DParams` or
  :class:`jaxlstm.ConvLSTM2DParams`, with the layer's ``padding``,
  ``strides`` and ``dilation_rate`` as static fields (Keras' recurrent
  convolution is always ``"same"`` with stride 1, as ours). Channels last
  only. Keras fixes a ConvLSTM's spatial input shape when it builds it, so
  :func:`to_keras` needs a built layer. Keras 3's ConvLSTM layers cannot take
  a ``mask`` (their RNN broadcasts it against the state and fails); our
  ``lengths`` give what they compute on each row cut to its length.
* Bidirectional: a :class:`jaxlstm.Bidirectional` pair; ``merge_mode``
  ``"concat"``, ``"sum"``, ``"ave"``, ``"mul"`` is our ``merge`` ``"concat"``,
  ``"sum"``, ``"mean"``, ``"mul"``.

A recurrent *layer* (or a list of them) converts to a stack tuple, so that
``jaxlstm.stack(from_keras(layer), xs, **keras_options(layer))`` computes
``layer(xs)`` (``return_sequences=True``; the last step, or the final state
with a mask, gives the default output, and the states give
``return_state``: Keras' ``[h, c]`` is our ``LSTMState(h, c)``).
:func:`keras_options` gives the one call setting that the params do not
carry, a ``Bidirectional``'s ``merge``. A *cell* converts to that cell's
params. :func:`to_keras` writes ``b`` into the input
bias and zeros into the recurrent one (``b_hn`` into the GRU's recurrent
candidate bias), so ours → Keras → ours is exact.

Masks. Keras' ``mask`` (or ``Masking``/``Embedding(mask_zero=True)``) has our
``mask`` semantics for the state: a masked step keeps the previous state, so
the final states agree, and right-padded masks equal our ``lengths``, also for
``Bidirectional``. Outputs differ at masked steps only: Keras repeats the
previous output there (zeros in ``Bidirectional``, or with
``zero_output_for_mask=True``), where jaxlstm writes zeros.

Dropout and ``recurrent_dropout`` act only with ``training=True``; conversions
match the layer at inference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxlstm._src.cells.convlstm import ConvLSTM1DParams, ConvLSTM2DParams, ConvLSTMParams
from jaxlstm._src.cells.gru import GRUParams
from jaxlstm._src.cells.lstm import LSTMParams
from jaxlstm._src.cells.rnn import RNNParams
from jaxlstm._src.stack import Bidirectional
from jaxlstm.interop import _common

_MERGES = {"concat": "concat", "sum": "sum", "ave": "mean", "mul": "mul"}
_SUPPORTED = (
  "keras.layers.LSTM, GRU, SimpleRNN, ConvLSTM1D, ConvLSTM2D, RNN (of one such cell), Bidirectional (of "
  "one such layer), "
  "LSTMCell, GRUCell or SimpleRNNCell, or a list of layers"
)


def _keras():
  try:
    import keras
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("jaxlstm.interop.keras needs Keras 3: pip install keras") from e
  return keras


def _cell_kind(cell: Any, name: str) -> type | None:
  layers = _keras().layers
  for cls, params_cls in (
    (layers.LSTMCell, LSTMParams),
    (layers.GRUCell, GRUParams),
    (layers.SimpleRNNCell, RNNParams),
  ):
    if isinstance(cell, cls):
      return params_cls
  # Keras exports the ConvLSTM layers but not their cell class.
  from keras.src.layers.rnn.conv_lstm import ConvLSTMCell

  if isinstance(cell, ConvLSTMCell):
    if cell.rank not in (1, 2):
      raise TypeError(
        f"{name} is a rank-{cell.rank} ConvLSTM cell; jaxlstm has ConvLSTM1D and ConvLSTM2D cells "
        f"(convlstm1d, convlstm2d) only"
      )
    return ConvLSTM1DParams if cell.rank == 1 else ConvLSTM2DParams
  return None


def _kind(layer: Any, name: str) -> tuple[str, type]:
  """``("cell" | "layer" | "bidirectional", params class)``, or a TypeError."""
  layers = _keras().layers
  cls = _cell_kind(layer, name)
  if cls is not None:
    return "cell", cls
  if isinstance(layer, layers.Bidirectional):
    _, cls = _kind(layer.forward_layer, f"{name}.forward_layer")
    _, bcls = _kind(layer.backward_layer, f"{name}.backward_layer")
    if bcls is not cls:
      raise TypeError(
        f"{name}.backward_layer must hold the same kind of cell as {name}.forward_layer "
        f"({cls.__name__}); got {bcls.__name__}"
      )
    if layer.forward_layer.go_backwards or not layer.backward_layer.go_backwards:
      raise ValueError(
        f"{name}.forward_layer.go_backwards must be False and {name}.backward_layer.go_backwards "
        f"True; got {layer.forward_layer.go_backwards} and {layer.backward_layer.go_backwards}"
      )
    return "bidirectional", cls
  if isinstance(layer, layers.RNN):
    cls = _cell_kind(layer.cell, f"{name}.cell")
    if cls is not None:
      return "layer", cls
    raise TypeError(
      f"{name}.cell must be a keras LSTMCell, GRUCell, SimpleRNNCell or ConvLSTM's cell; "
      f"got {type(layer.cell).__name__}"
    )
  raise TypeError(f"{name} must be a {_SUPPORTED}; got {type(layer).__module__}.{type(layer).__name__}")


def _act_name(fn: Any) -> str:
  return getattr(fn, "__name__", repr(fn))


def _check_cell(cell: Any, cls: type, name: str) -> None:
  """Refuses activations and variants that jaxlstm's cells do not compute."""
  act = _act_name(cell.activation)
  if cls is RNNParams:
    if act not in ("tanh", "relu"):
      raise ValueError(f"{name}.activation must be 'tanh' or 'relu'; got {act!r}")
    return
  if act != "tanh":
    raise ValueError(f"{name}.activation must be 'tanh'; got {act!r}")
  rec = _act_name(cell.recurrent_activation)
  if rec != "sigmoid":
    raise ValueError(f"{name}.recurrent_activation must be 'sigmoid'; got {rec!r}")
  if issubclass(cls, ConvLSTMParams) and cell.data_format != "channels_last":
    raise ValueError(
      f"{name}.data_format must be 'channels_last', jaxlstm's ConvLSTM layout (move the channel "
      f"axis last); got {cell.data_format!r}"
    )
  if cls is GRUParams and not cell.reset_after:
    raise ValueError(
      f"{name}.reset_after must be True: with reset_after=False Keras computes (r * h) @ U_h, "
      "which jaxlstm's GRU, r * (h @ U_h + b_hn), cannot represent for a general U_h; "
      "got False"
    )


def _np(v: Any) -> np.ndarray:
  return np.array(_keras().ops.convert_to_numpy(v.value), copy=True)


def _read_cell(cell: Any, cls: type, name: str) -> Any:
  _check_cell(cell, cls, name)
  if not cell.built:
    raise ValueError(
      f"{name} must be built before its weights can be read (call it on an input, or "
      f"build(input_shape)); got an unbuilt {type(cell).__name__}"
    )
  k, rk = _np(cell.kernel), _np(cell.recurrent_kernel)  # (I, G*H), (H, G*H); ConvLSTM (*K, C, 4F), (*K, F, 4F)
  H = rk.shape[-2]
  bias = _np(cell.bias) if cell.use_bias else None
  if issubclass(cls, ConvLSTMParams):
    return cls(
      k,
      rk,
      np.zeros((4 * H,), k.dtype) if bias is None else bias,
      padding=cell.padding,
      strides=tuple(cell.strides),
      dilation=tuple(cell.dilation_rate),
      forget_offset=0.0,
    )
  if cls is LSTMParams:
    return LSTMParams(k, rk, np.zeros((4 * H,), k.dtype) if bias is None else bias)
  if cls is RNNParams:
    return RNNParams(k, rk, np.zeros((H,), k.dtype) if bias is None else bias, activation=_act_name(cell.activation))
  # Keras z, r, h -> our r, z, n.
  perm = np.concatenate([np.arange(H, 2 * H), np.arange(H), np.arange(2 * H, 3 * H)])
  if bias is None:
    b_in, b_rec = np.zeros((2, 3 * H), k.dtype)
  else:
    b_in, b_rec = bias[0][perm], bias[1][perm]
  b = np.concatenate([b_in[: 2 * H] + b_rec[: 2 * H], b_in[2 * H :]])
  return GRUParams(k[:, perm], rk[:, perm], b, b_rec[2 * H :].copy())


def _layers(layer: Any) -> tuple[list[tuple[str, Any]], bool]:
  """``([(name, layer), ...], is_list)``: a list of layers, or one."""
  if isinstance(layer, (list, tuple)):
    if not layer:
      raise ValueError("layer must be a non-empty list of Keras layers; got an empty list")
    return [(f"layer[{i}]", l) for i, l in enumerate(layer)], True
  return [("layer", layer)], False


def from_keras(layer: Any) -> Any:
  """Converts a Keras 3 recurrent layer's weights to jaxlstm params.

  Args:
    layer: a built ``keras.layers.LSTM``, ``GRU`` (``reset_after=True``),
      ``SimpleRNN``, ``RNN`` of one such cell, or ``Bidirectional`` of one of
      them; a list of such layers (a stack); or a built ``LSTMCell``,
      ``GRUCell`` or ``SimpleRNNCell``.

  Returns:
    For a layer, a stack tuple with one entry (a :class:`jaxlstm.Bidirectional`
    pair for ``Bidirectional``); for a list, one entry per layer; run it with
    ``jaxlstm.stack(params, xs, **keras_options(layer))``. For a cell, that
    cell's :class:`jaxlstm.LSTMParams` ``w_x (I, 4H)``, ``w_h (H, 4H)``,
    ``b (4H,)``, :class:`jaxlstm.GRUParams` (with ``b_hn (H,)``) or
    :class:`jaxlstm.RNNParams` (with ``activation``, the SimpleRNN's
    ``"tanh"`` or ``"relu"``). Arrays keep the layer's dtype.

  Raises:
    TypeError: for an unsupported layer.
    ValueError: for an unbuilt layer, an activation other than tanh (relu too
      for SimpleRNN) with a sigmoid recurrent activation, or
      ``GRU(reset_after=False)``.

  Example:
    >>> import os
    >>> _ = os.environ.setdefault("KERAS_BACKEND", "jax")
    >>> import keras
    >>> from jaxlstm.interop import from_keras
    >>> layer = keras.layers.SimpleRNN(4, activation="relu", return_sequences=True)
    >>> layer.build((None, None, 3))
    >>> params = from_keras(layer)
    >>> params[0].w_x.shape, params[0].w_h.shape, params[0].activation
    ((3, 4), (4, 4), 'relu')
    >>> xs = np.ones((2, 5, 3), "float32")
    >>> _, hs = jaxlstm.stack(params, xs)
    >>> bool(np.allclose(hs, layer(xs), atol=1e-6))
    True
  """
  entries, is_list = _layers(layer)
  out = []
  for name, l in entries:
    kind, cls = _kind(l, name)
    if kind == "cell":
      if is_list:
        raise TypeError(
          f"{name} must be a recurrent layer in a list; got the cell {type(l).__name__} (wrap it in keras.layers.RNN)"
        )
      return _common.to_jax(_read_cell(l, cls, name))
    if kind == "bidirectional":
      out.append(
        Bidirectional(
          _read_cell(l.forward_layer.cell, cls, f"{name}.forward_layer.cell"),
          _read_cell(l.backward_layer.cell, cls, f"{name}.backward_layer.cell"),
        )
      )
    else:
      out.append(_read_cell(l.cell, cls, f"{name}.cell"))
  return _common.to_jax(tuple(out))


def keras_options(layer: Any) -> dict[str, Any]:
  """Keyword arguments for :func:`jaxlstm.stack` that run ``layer``'s params as Keras runs them.

  Only settings of the call are returned: what each layer computes, a
  SimpleRNN's ``activation`` included, is in the params from
  :func:`from_keras`.

  Args:
    layer: what :func:`from_keras` accepts.

  Returns:
    ``{"merge": ...}`` when there is a ``Bidirectional``; empty otherwise.
    Keras is batch-major, which is :func:`jaxlstm.stack`'s default.

  Raises:
    TypeError: for an unsupported layer.
    ValueError: when jaxlstm cannot run the layers as one stack: a
      standalone layer with ``go_backwards=True`` (Keras returns its outputs
      in reversed time order; run ``jaxlstm.lstm(..., reverse=True)`` and flip
      the outputs instead), ``merge_mode=None``, or layers that disagree on the
      merge mode.

  Example:
    >>> import os
    >>> _ = os.environ.setdefault("KERAS_BACKEND", "jax")
    >>> import keras
    >>> from jaxlstm.interop import keras_options
    >>> keras_options(keras.layers.Bidirectional(keras.layers.SimpleRNN(4, activation="relu"), merge_mode="sum"))
    {'merge': 'sum'}
    >>> keras_options(keras.layers.GRU(4))
    {}
  """
  entries, _ = _layers(layer)
  merges = {}
  for name, l in entries:
    kind, _ = _kind(l, name)
    if kind == "bidirectional":
      if l.merge_mode not in _MERGES:
        raise ValueError(
          f"{name}.merge_mode must be one of {sorted(_MERGES)} to run as jaxlstm.stack; got "
          f"{l.merge_mode!r} (run jaxlstm.lstm on each direction, the backward one with "
          f"reverse=True, to get both outputs)"
        )
      merges[name] = _MERGES[l.merge_mode]
    elif kind == "layer" and l.go_backwards:
      raise ValueError(
        f"{name}.go_backwards must be False to run as jaxlstm.stack: Keras returns a "
        "go_backwards layer's outputs in reversed time order (run jaxlstm's layer with "
        "reverse=True and flip its outputs along time); got True"
      )
  if len(set(merges.values())) > 1:
    raise ValueError(f"layer must use one merge in all layers to run as one jaxlstm.stack; got {merges}")
  return {"merge": next(iter(merges.values()))} if merges else {}


def _check_params(cell: Any, p: Any, cls: type, name: str, cname: str) -> None:
  """The checks that need no weights: the cell's settings, the params' type and features, the activation."""
  _check_cell(cell, cls, cname)
  _common.check_cell_params(name, p, cls, f"Keras {type(cell).__name__}")
  if cls is RNNParams:
    _common.check_activation(name, p, _act_name(cell.activation), cname, "activation")
  if issubclass(cls, ConvLSTMParams):
    if p.forget_offset != 0.0:
      raise ValueError(
        f"{name}.forget_offset is {p.forget_offset} but Keras' ConvLSTM adds nothing to the forget "
        f"gate at run time; fold it into the bias first, "
        f"{name}._replace(b=b.at[F:2 * F].add(offset), forget_offset=0.0), which rounds"
      )
    for field, setting in (("padding", "padding"), ("strides", "strides"), ("dilation", "dilation_rate")):
      want = getattr(cell, setting)
      want = want if isinstance(want, str) else tuple(want)
      if getattr(p, field) != want:
        raise ValueError(
          f"{name}.{field} is {getattr(p, field)!r} but {cname} has {setting}={want!r}; build "
          f"the layer with {setting}={getattr(p, field)!r}"
        )


def _write_cell(cell: Any, p: Any, cls: type, name: str, cname: str) -> list[tuple[Any, np.ndarray]]:
  """Checks one direction's params against a Keras cell; returns ``[(variable, value), ...]``."""
  _check_params(cell, p, cls, name, cname)
  fields = _common.array_fields(p)
  G = _common.gates(cls)
  I, H = fields["w_x"].shape[-2], fields["w_x"].shape[-1] // G
  conv = issubclass(cls, ConvLSTMParams)
  if not cell.built:
    if conv:
      raise ValueError(
        f"{cname} must be built before params can be written into it: Keras fixes a ConvLSTM's "
        f"spatial input shape when it builds it"
      )
    cell.build((None, I))
  units, setting = (cell.filters, "filters") if conv else (cell.units, "units")
  if units != H:
    raise ValueError(
      f"{name}.w_x must have shape ({'*kernel_size, ' if conv else ''}I, {G * units}) to match "
      f"{cname}.{setting}={units}; got {fields['w_x'].shape}"
    )
  dtype = np.dtype(cell.kernel.dtype)
  for f, v in fields.items():
    _common.check_dtype(f"{name}.{f}", v, dtype, cname)
  _common.check_shape(f"{name}.w_x", fields["w_x"], tuple(cell.kernel.shape), f" (the shape of {cname}.kernel)")
  _common.check_shape(
    f"{name}.w_h", fields["w_h"], tuple(cell.recurrent_kernel.shape), f" (the shape of {cname}.recurrent_kernel)"
  )
  _common.check_shape(f"{name}.b", fields["b"], (G * H,))
  w_x, w_h, b = fields["w_x"], fields["w_h"], fields["b"]
  bias = b
  if cls is GRUParams:
    _common.check_shape(f"{name}.b_hn", fields["b_hn"], (H,))
    # Our r, z, n -> Keras z, r, h.
    perm = np.concatenate([np.arange(H, 2 * H), np.arange(H), np.arange(2 * H, 3 * H)])
    w_x, w_h, b = w_x[:, perm], w_h[:, perm], b[perm]
    rec = np.zeros_like(b)
    rec[2 * H :] = fields["b_hn"]
    bias = np.stack([b, rec])
  writes = [(cell.kernel, w_x), (cell.recurrent_kernel, w_h)]
  if cell.use_bias:
    writes.append((cell.bias, bias))
  else:
    _common.check_zero(f"{name}.b", fields["b"], f"{cname}.use_bias is False")
    if cls is GRUParams:
      _common.check_zero(f"{name}.b_hn", fields["b_hn"], f"{cname}.use_bias is False")
  return writes


def to_keras(params: Any, layer: Any) -> Any:
  """Writes jaxlstm params into a Keras 3 layer or cell, in place.

  An unbuilt layer is built for the params' input size first. Every check
  runs before anything is written, so on an error the weights are unchanged.

  Args:
    params: a stack tuple with one entry per layer (a
      :class:`jaxlstm.Bidirectional` pair for ``Bidirectional``) when ``layer``
      is a layer or a list of them; one cell's params when it is a cell. LSTM
      params must have no peepholes, layer norm or projection; RNN params
      must have the ``activation`` of the SimpleRNN they are written into.
    layer: what :func:`from_keras` accepts.

  Returns:
    ``layer``. A GRU's input bias row gets ``b`` and its recurrent row
    ``(0, 0, b_hn)`` (in Keras' z, r, h order).

  Raises:
    TypeError: for an unsupported layer, a params type or structure that does
      not match it, or a dtype mismatch.
    ValueError: for a shape mismatch, an unsupported setting (see
      :func:`from_keras`), an RNN activation other than the SimpleRNN's, or a
      nonzero bias for a layer with ``use_bias=False`` (never dropped
      silently).

  Example:
    >>> import os
    >>> _ = os.environ.setdefault("KERAS_BACKEND", "jax")
    >>> import keras
    >>> from jaxlstm.interop import to_keras
    >>> params = jaxlstm.stack_init(jax.random.key(0), 3, 4, 1, cell="rnn", activation="relu")
    >>> layer = to_keras(params, keras.layers.SimpleRNN(4, activation="relu"))
    >>> np.array_equal(layer.cell.kernel, params[0].w_x)
    True
    >>> to_keras(params, keras.layers.SimpleRNN(4))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: params[0].activation is 'relu' but layer.cell has activation='tanh'; ...
  """
  entries, is_list = _layers(layer)
  kinds = [_kind(l, name) for name, l in entries]
  writes = []
  if not is_list and kinds[0][0] == "cell":
    writes = _write_cell(layer, params, kinds[0][1], "params", "layer")
  else:
    _common.check_stack("params", params, len(entries), f"the {len(entries)} Keras layer(s)")
    for k, ((name, l), (kind, cls), p) in enumerate(zip(entries, kinds, params)):
      if kind == "cell":
        raise TypeError(f"{name} must be a recurrent layer in a list; got the cell {type(l).__name__}")
      dirs = _common.directions(f"params[{k}]", p, kind == "bidirectional", name)
      cells = (
        [(l.forward_layer.cell, f"{name}.forward_layer.cell"), (l.backward_layer.cell, f"{name}.backward_layer.cell")]
        if kind == "bidirectional"
        else [(l.cell, f"{name}.cell")]
      )
      if not l.built and issubclass(cls, ConvLSTMParams):
        raise ValueError(
          f"{name} must be built before params can be written into it: Keras fixes a ConvLSTM's "
          f"spatial input shape when it builds it (call {name}.build((None, T, *spatial, C)) or "
          f"the layer on an input)"
        )
      if not l.built:
        # Checked before building, so that params the layer refuses leave it unbuilt.
        for (cell, cname), (pname, pp) in zip(cells, dirs):
          _check_params(cell, pp, cls, pname, cname)
        l.build((None, None, dirs[0][1].w_x.shape[0]))
      for (cell, cname), (pname, pp) in zip(cells, dirs):
        writes += _write_cell(cell, pp, cls, pname, cname)
  for var, value in writes:
    var.assign(value)
  return layer
