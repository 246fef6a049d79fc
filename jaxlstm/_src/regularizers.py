"""The recurrent regularizers' implementation; :mod:`jaxlstm.regularizers` defines every option and mask."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Regularizers(NamedTuple):
  """The regularizer rates of one layer call, checked; see the module docstring for each.

  Attributes:
    input_dropout: variational dropout rate on the input.
    recurrent_dropout: variational dropout rate on ``h_{t-1}`` in the recurrent projection, per gate.
    zoneout: ``((field, rate), ...)``, the zoneout rate of each state field that has one.
    weight_drop: DropConnect rate on ``w_h``.

  Example:
    >>> from jaxlstm._src.regularizers import Regularizers
    >>> reg = Regularizers(recurrent_dropout=0.25, zoneout=(("c", 0.5),))
    >>> reg.in_loop, reg.active
    (('recurrent_dropout', 'zoneout'), True)
  """

  input_dropout: float = 0.0
  recurrent_dropout: float = 0.0
  zoneout: tuple[tuple[str, float], ...] = ()
  weight_drop: float = 0.0

  @property
  def active(self) -> bool:
    """Whether any rate is positive."""
    return bool(self.input_dropout or self.recurrent_dropout or self.zoneout or self.weight_drop)

  @property
  def in_loop(self) -> tuple[str, ...]:
    """The names of the regularizers that act inside the time loop."""
    return tuple(
      n for n, on in (("recurrent_dropout", self.recurrent_dropout > 0), ("zoneout", bool(self.zoneout))) if on
    )


NONE = Regularizers()


def check_rate(name: str, rate: Any) -> float:
  """``rate`` as a float in ``[0, 1)``; raises naming ``name`` otherwise.

  Example:
    >>> from jaxlstm._src.regularizers import check_rate
    >>> check_rate("zoneout", 0.1)
    0.1
    >>> check_rate("recurrent_dropout", 1.0)
    Traceback (most recent call last):
    ValueError: recurrent_dropout must be a rate in [0, 1); got 1.0
  """
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
    raise ValueError(f"{name} must be a rate in [0, 1); got {rate!r}")
  return float(rate)


def check_regularizers(
  cell: Any,
  *,
  input_dropout: Any = 0.0,
  recurrent_dropout: Any = 0.0,
  zoneout: Any = 0.0,
  weight_drop: Any = 0.0,
  key: Any = None,
  name: str = "params",
) -> Regularizers:
  """Checks a call's regularizer options against the layer's cell and ``key``; returns them as a record.

  Args:
    cell: the layer's :class:`jaxlstm.Cell` record.
    input_dropout, recurrent_dropout, weight_drop: rates in ``[0, 1)``.
    zoneout: a rate for every state field, or a mapping ``{field: rate}``.
    key: the call's PRNG key, or ``None``.
    name: the params' name, for the messages.

  Returns:
    A :class:`Regularizers`.

  Raises:
    ValueError: naming the option, for a rate outside ``[0, 1)``, a zoneout field the cell's state does not
      have, a dropout without ``key``, or an option the cell cannot take (recurrent dropout needs the cell
      record's ``update``; weight drop needs recurrent weights ``w_h``).

  Example:
    >>> from jaxlstm._src.regularizers import check_regularizers
    >>> check_regularizers(jaxlstm.get_cell("lstm"), zoneout={"c": 0.5, "h": 0.05}).zoneout
    (('h', 0.05), ('c', 0.5))
    >>> check_regularizers(jaxlstm.get_cell("gru"), zoneout={"c": 0.5})
    Traceback (most recent call last):
    ValueError: zoneout names state fields ['c'], but a gru layer's state has fields ['h']
    >>> check_regularizers(jaxlstm.get_cell("lstm"), input_dropout=0.2)
    Traceback (most recent call last):
    ValueError: input_dropout=0.2 needs key, a PRNG key; pass input_dropout=0.0 for evaluation
  """
  rates = {
    n: check_rate(n, r)
    for n, r in (
      ("input_dropout", input_dropout),
      ("recurrent_dropout", recurrent_dropout),
      ("weight_drop", weight_drop),
    )
  }
  fields = tuple(cell.state_type._fields)
  if isinstance(zoneout, Mapping):
    unknown = [f for f in zoneout if f not in fields]
    if unknown:
      raise ValueError(
        f"zoneout names state fields {unknown}, but a {cell.name} layer's state has fields {list(fields)}"
      )
    per_field = {f: check_rate(f"zoneout[{f!r}]", zoneout[f]) for f in fields if f in zoneout}
  else:
    rate = check_rate("zoneout", zoneout)
    per_field = dict.fromkeys(fields, rate)
  zones = tuple((f, r) for f, r in per_field.items() if r > 0)
  if zones and getattr(cell, "feature_axes", 1) != 1:
    raise ValueError(
      f"zoneout takes cells whose state has one feature axis; a {cell.name} layer's has {cell.feature_axes}"
    )
  if zones and "h" not in fields:
    raise ValueError(
      f"zoneout needs a cell whose output is its state's h; a {cell.name} layer's state has fields {list(fields)}"
    )
  for opt, rate in rates.items():
    if rate > 0 and key is None:
      raise ValueError(f"{opt}={rate} needs key, a PRNG key; pass {opt}=0.0 for evaluation")
  if rates["recurrent_dropout"] > 0 and cell.update is None:
    raise ValueError(
      f"recurrent_dropout needs a cell whose step begins with the projections x @ w_x and "
      f"h @ w_h (its record's update); {name} is a {cell.name} layer, which has none"
    )
  if rates["weight_drop"] > 0 and "w_h" not in cell.params_type._fields:
    raise ValueError(f"weight_drop drops the recurrent weights w_h; {name} is a {cell.name} layer, which has no w_h")
  return Regularizers(rates["input_dropout"], rates["recurrent_dropout"], zones, rates["weight_drop"])


def dropout_mask(key: jax.Array, rate: float, shape: tuple[int, ...], dtype) -> jax.Array:
  """An inverted-dropout mask: ``0`` with probability ``rate``, else ``1 / (1 - rate)``.

  Example:
    >>> from jaxlstm._src.regularizers import dropout_mask
    >>> m = dropout_mask(jax.random.key(0), 0.5, (1000,), jnp.float32)
    >>> sorted(set(m.tolist())), 0.4 < float((m == 0).mean()) < 0.6
    ([0.0, 2.0], True)
  """
  keep = jax.random.bernoulli(key, 1.0 - rate, shape)
  return jnp.where(keep, 1.0 / (1.0 - rate), 0.0).astype(dtype)


class Masks(NamedTuple):
  """The per-sequence masks that ride in the loop's carry, each ``(*batch, gates, F)`` or ``None``."""

  x: jax.Array | None  # (*batch, G, I): input_dropout per gate, with recurrent_dropout
  h: jax.Array | None  # (*batch, G, P): recurrent_dropout per gate


def prepare(
  reg: Regularizers, params: Any, xs: jax.Array, key: jax.Array | None, *, cell: Any, time_major: bool
) -> tuple[Any, jax.Array, Masks | None]:
  """Draws a call's masks: applies those that act before the kernel, and returns the in-loop ones.

  Args:
    reg: the call's :class:`Regularizers`.
    params: the layer's params.
    xs: inputs ``(*batch, T, I)`` (time-major ``(T, *batch, I)``).
    key: the call's key (``None`` only when no dropout is asked for).
    cell: the layer's cell record.
    time_major: the layout of ``xs``.

  Returns:
    ``(params, xs, masks)``: the params with ``w_h`` dropped; the inputs with the shared input mask applied
    and, in training with zoneout, the zoneout draws appended as extra features ``(..., I + F_z)``; the
    per-gate :class:`Masks` for the loop, or ``None`` without recurrent dropout.
  """
  # check_regularizers() has checked that every dropout rate above 0 comes with a key; the asserts say so to mypy.
  keys = None if key is None else jax.random.split(key, 4)
  if reg.weight_drop > 0:
    assert keys is not None
    params = params._replace(
      w_h=params.w_h * dropout_mask(keys[3], reg.weight_drop, params.w_h.shape, params.w_h.dtype)
    )
  axes = getattr(cell, "feature_axes", 1)  # a convolutional cell's inputs have (*spatial, C)
  batch_shape = tuple(xs.shape[1:-axes]) if time_major else tuple(xs.shape[: -axes - 1])
  features = tuple(xs.shape[-axes:])
  time_axis = 0 if time_major else xs.ndim - axes - 1
  masks = None
  if reg.recurrent_dropout > 0:
    assert keys is not None
    G, P = cell.gates, params.w_h.shape[0]
    mx = (
      None
      if reg.input_dropout == 0
      else dropout_mask(keys[0], reg.input_dropout, (*batch_shape, G, xs.shape[-1]), xs.dtype)
    )
    masks = Masks(mx, dropout_mask(keys[1], reg.recurrent_dropout, (*batch_shape, G, P), xs.dtype))
  elif reg.input_dropout > 0:
    assert keys is not None
    mask = dropout_mask(keys[0], reg.input_dropout, (*batch_shape, *features), xs.dtype)
    xs = xs * jnp.expand_dims(mask, time_axis)  # the same mask at every step
  if reg.zoneout and keys is not None:
    widths = zone_widths(reg, params, cell)
    T = xs.shape[time_axis]
    shape = (T, *batch_shape) if time_major else (*batch_shape, T)
    draws = [
      jax.random.bernoulli(k, rate, (*shape, w)).astype(xs.dtype)
      for k, (_, rate), w in zip(jax.random.split(keys[2], len(widths)), reg.zoneout, widths)
    ]
    xs = jnp.concatenate([xs, *draws], axis=-1)
  return params, xs, masks


def zone_widths(reg: Regularizers, params: Any, cell: Any) -> list[int]:
  """The feature width of each zoned-out state field, from the cell's zero state."""
  zero = cell.zero_state(params, ())
  return [getattr(zero, f).shape[-1] for f, _ in reg.zoneout]


def projection(v: jax.Array, w: jax.Array, mask: jax.Array | None, gates: int) -> jax.Array:
  """``v @ w``, or with ``mask (..., G, K)`` the per-gate ``(v * mask[g]) @ w[:, g-th block]``, joined.

  Example:
    >>> from jaxlstm._src.regularizers import projection
    >>> v, w = jnp.ones((2, 3)), jnp.arange(12.0).reshape(3, 4)
    >>> mask = jnp.stack([jnp.ones((2, 3)), jnp.zeros((2, 3))], axis=1)  # gate 0 keeps v, gate 1 drops it
    >>> projection(v, w, mask, 2)
    Array([[12., 15.,  0.,  0.],
           [12., 15.,  0.,  0.]], dtype=float32)
  """
  cdt = w.dtype
  if mask is None:
    return v.astype(cdt) @ w
  K = w.shape[0]
  vm = (v[..., None, :] * mask).astype(cdt)  # (..., G, K)
  z = jnp.einsum("...gk,kgh->...gh", vm, w.reshape(K, gates, -1))  # (..., G, H)
  return z.reshape(*z.shape[:-2], -1)


def looped_step(cell: Any, reg: Regularizers, params: Any, *, training: bool) -> Callable:
  """The cell's step with the in-loop regularizers around it, for the reference kernel's scan.

  Its state is ``(cell state, Masks)``; with zoneout in training its input carries the zoneout draws after the
  ``I`` input features, as :func:`prepare` appends them.

  Args:
    cell: the cell record.
    reg: the call's :class:`Regularizers`.
    params: the layer's params (for the sizes).
    training: whether the zoneout draws are in the input (else zoneout takes its expectation).

  Returns:
    ``step(params, (state, masks), x) -> ((state, masks), y)``.
  """
  I = params.input_size
  widths = zone_widths(reg, params, cell) if reg.zoneout else []

  def step(params, carry, x):
    state, masks = carry
    draws = None
    if reg.zoneout and training:
      x, draws = x[..., :I], x[..., I:]
    if reg.recurrent_dropout > 0:
      zx = projection(x, params.w_x, masks.x, cell.gates)
      zh = projection(state.h, params.w_h, masks.h, cell.gates)
      new, y = cell.update(params, state, zx, zh)
    else:
      new, y = cell.step(params, state, x)
    if reg.zoneout:
      updates, start = {}, 0
      for (f, rate), w in zip(reg.zoneout, widths):
        old, fresh = getattr(state, f), getattr(new, f)
        if training:
          assert draws is not None  # split off the input above, under the same condition
          d = draws[..., start : start + w]
          updates[f] = jnp.where(d > 0, old, fresh)
        else:
          updates[f] = (rate * old + (1.0 - rate) * fresh).astype(fresh.dtype)
        start += w
      new = new._replace(**updates)
      y = new.h  # the output is the zoned-out h
    return (new, masks), y

  return step
