r"""The sLSTM cell of Beck et al. (2024), xLSTM: exponential gating, a normalizer state and block-diagonal heads.

.. math::

  \tilde z, \tilde i, \tilde f, \tilde o &= x_t W + h_{t-1} R + b \\
  z_t = \tanh(\tilde z) \qquad o_t &= \sigma(\tilde o) \qquad
  \log i_t = \tilde i \qquad \log f_t = \log\sigma(\tilde f) \text{ or } \tilde f \\
  m_t &= \max(\log f_t + m_{t-1}, \log i_t) \\
  i'_t = \exp(\log i_t - m_t) \qquad f'_t &= \exp(\log f_t + m_{t-1} - m_t) \\
  c_t = f'_t c_{t-1} + i'_t z_t \qquad n_t &= f'_t n_{t-1} + i'_t \qquad h_t = o_t \odot c_t / n_t

The input gate is exponential, ``i = exp(i~)``; the forget gate is a sigmoid
(``forget_gate="sigmoid"``, the default) or exponential (``"exp"``), the two
forms the paper allows. NX-AI's ``xlstm`` package computes the sigmoid one
(its ``function="slstm"``, ``logsigmoid(f~)``), and so does this cell by
default. ``m`` is the paper's stabilizer: ``c`` and ``n`` are the unstabilized
cell and normalizer scaled by ``exp(-m_t)``, so ``h = o c / n`` is the same
function while ``i'`` and ``f'`` never exceed 1, and no ``exp`` overflows
however large the pre-activations are.

**The first step.** A state whose normalizer ``n`` is zero (the zero state,
or a reset to it) holds nothing, and its stabilizer starts from the input gate
alone: ``m_t = log i_t``, ``f'_t = 0``, so that ``n_t = 1``. This is the
convention of xlstm's vanilla backend (``if torch.all(n == 0.0): mnew =
iraw``), applied here per unit rather than to the whole batch at once, so that
a row's result does not depend on the other rows (the two agree whenever a
run starts from the zero state). From then on ``n_t >= 1``, so ``c / n`` never
divides by a small number; the paper's ``max`` with ``m_0 = 0`` instead would
give ``n_1 = exp(log i_1 - log f_1)``, which underflows to ``0 / 0`` when
``i~`` is very negative. ``h`` is the same either way; ``m``, ``c`` and ``n``
differ by a common factor.

**Heads.** The ``H`` units are ``num_heads`` heads of ``D = H / num_heads``
units, and the recurrence is block-diagonal: a head's gates read only that
head's ``h``. ``num_heads`` is a static field of the params (in the pytree's
structure, not a leaf), so it travels through ``jit``, optax, the Flax modules
and checkpoints.

**Layout**, stated once. Along the ``4H`` axis of ``w_x`` and ``b`` the gates
are **i, f, z, o** (input, forget, cell input, output; the order of xlstm's
cell, and the LSTM's i, f, g, o with ``z`` for ``g``), and within each gate
the heads follow one another, ``D`` units each: index ``g * H + k * D + d`` is
gate ``g``, head ``k``, unit ``d``. ``r`` is ``(num_heads, D, 4D)``: ``r[k]``
maps head ``k``'s ``h`` to its four gates, again in the order i, f, z, o,
``D`` each. xlstm's ``sLSTMCell.recurrent_kernel`` is ``(num_heads, D, 4, D)``
in the same order, so ``r = recurrent_kernel.reshape(num_heads, D, 4 * D)``,
and its ``bias`` ``(num_heads, 4, D)`` is ``b = bias.transpose(1, 0, 2)
.reshape(4 * H)`` (:mod:`jaxlstm.interop.xlstm` does this).

References:
  Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter &
  Hochreiter (2024), xLSTM: Extended long short-term memory. arXiv:2405.04517,
  Section 2.2, the sLSTM and its stabilization.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxlstm._src import checks
from jaxlstm._src.cells.lstm import state_dtype
from jaxlstm._src.cells.registry import Cell, static_fields
from jaxlstm._src.types import Array

FORGET_GATES = ("sigmoid", "exp")


def check_forget_gate(forget_gate) -> None:
  """Raises ``ValueError`` unless ``forget_gate`` is one of :data:`FORGET_GATES`.

  Example:
    >>> from jaxlstm._src.cells.slstm import check_forget_gate
    >>> check_forget_gate("exp")
    >>> check_forget_gate("tanh")
    Traceback (most recent call last):
    ValueError: forget_gate must be one of ('sigmoid', 'exp'); got 'tanh'
  """
  if not isinstance(forget_gate, str) or forget_gate not in FORGET_GATES:
    raise ValueError(f"forget_gate must be one of {FORGET_GATES}; got {forget_gate!r}")


def check_heads(num_heads, hidden_size: int) -> None:
  """Raises ``ValueError`` unless ``num_heads`` is a positive int that divides ``hidden_size``.

  Example:
    >>> from jaxlstm._src.cells.slstm import check_heads
    >>> check_heads(2, 8)
    >>> check_heads(3, 8)
    Traceback (most recent call last):
    ValueError: num_heads must divide hidden_size=8; got 3
  """
  checks.check_positive_int("num_heads", num_heads)
  if hidden_size % num_heads:
    raise ValueError(f"num_heads must divide hidden_size={hidden_size}; got {num_heads}")


@static_fields("num_heads", "forget_gate")
class SLSTMParams(NamedTuple):
  """Parameters of one sLSTM layer; every ``4H`` axis holds the gates i, f, z, o, each ``H`` wide, head after head.

  ``D = H / num_heads`` is the head size.

  Attributes:
    w_x: ``(I, 4H)`` input weights.
    r: ``(num_heads, D, 4D)`` block-diagonal recurrent weights; ``r[k]``
      maps head ``k``'s ``h`` to its gates i, f, z, o, ``D`` each.
    b: ``(4H,)`` bias.
    num_heads: static; the number of heads.
    forget_gate: static; ``"sigmoid"`` or ``"exp"``.

  Example:
    >>> params = jaxlstm.slstm_init(jax.random.key(0), 3, 8, num_heads=2)
    >>> params.w_x.shape, params.r.shape, params.b.shape, params.num_heads, params.forget_gate
    ((3, 32), (2, 4, 16), (32,), 2, 'sigmoid')
    >>> [leaf.shape for leaf in jax.tree.leaves(params)]  # the static fields are not leaves
    [(3, 32), (2, 4, 16), (32,)]
  """

  w_x: Array  # (I, 4H) input weights, gates i, f, z, o
  r: Array  # (num_heads, D, 4D) recurrent weights per head, gates i, f, z, o
  b: Array  # (4H,)
  num_heads: int = 1  # static
  forget_gate: str = "sigmoid"  # static: "sigmoid" or "exp"

  @property
  def input_size(self) -> int:
    """``I``, the size of each input vector."""
    return self.w_x.shape[0]

  @property
  def hidden_size(self) -> int:
    """``H``, the size of the state."""
    return self.w_x.shape[1] // 4

  @property
  def output_size(self) -> int:
    """The size of each output, ``H``."""
    return self.w_x.shape[1] // 4

  @property
  def head_size(self) -> int:
    """``D = H / num_heads``, the units of one head."""
    return self.r.shape[-2]

  @property
  def dtype(self):
    """The params' dtype, in which the projections are computed."""
    return self.w_x.dtype


class SLSTMState(NamedTuple):
  """State of an sLSTM layer, with any leading batch axes; the fields in the order of xlstm's ``(4, B, H)`` state.

  Attributes:
    h: ``(..., H)`` hidden state, which is also the layer's output.
    c: ``(..., H)`` cell state, scaled by ``exp(-m)``.
    n: ``(..., H)`` normalizer state, scaled by ``exp(-m)``; zero means empty.
    m: ``(..., H)`` stabilizer, the log of the scale.

  Example:
    >>> params = jaxlstm.slstm_init(jax.random.key(0), 3, 4)
    >>> state, hs = jaxlstm.layer(params, jnp.ones((2, 7, 3)))
    >>> state._fields, state.n.shape, bool((state.h == hs[:, -1]).all()), bool((state.n >= 1).all())
    (('h', 'c', 'n', 'm'), (2, 4), True, True)
  """

  h: jax.Array  # (..., H) hidden state (the output)
  c: jax.Array  # (..., H) cell state, scaled by exp(-m)
  n: jax.Array  # (..., H) normalizer, scaled by exp(-m); 0 = empty
  m: jax.Array  # (..., H) stabilizer


def powerlaw_forget_bias(head_size: int, dtype=jnp.float32) -> jax.Array:
  r"""xlstm's default forget-gate bias for one head: ``5 - 12 (d / (D - 1))^{0.3}``, from 5 down to -7.

  The ``"powerlaw_blockdependent"`` init of xlstm's ``sLSTMCell`` for a single
  block: a spread of time scales inside each head, a few units remembering for
  long (``sigmoid(5) = 0.993``) and most forgetting fast. A head of one unit
  gets 5 (xlstm divides by ``D - 1 = 0`` there).

  Example:
    >>> from jaxlstm._src.cells.slstm import powerlaw_forget_bias
    >>> powerlaw_forget_bias(4)
    Array([ 5.       , -3.6306772, -5.6256094, -7.       ], dtype=float32)
  """
  d = jnp.arange(head_size, dtype=jnp.float32) / max(head_size - 1, 1)
  return (5.0 - 12.0 * d**0.3).astype(dtype)


def slstm_init(
  key: jax.Array,
  input_size: int,
  hidden_size: int,
  *,
  num_heads: int = 1,
  forget_gate: str = "sigmoid",
  dtype: DTypeLike = jnp.float32,
) -> SLSTMParams:
  """Initializes an sLSTM layer as NX-AI's xlstm does.

  ``w_x`` is normal with standard deviation ``sqrt(2 / (5 I))``, the "small
  init" (Nguyen & Salazar, 2019) that xlstm's ``sLSTMLayer`` gives its gate
  projections. ``r`` is zero, xlstm's default ``recurrent_weight_init``: the
  recurrence is learned from there. ``b`` is zero except the forget gate,
  whose bias in every head is :func:`powerlaw_forget_bias`, xlstm's default
  ``"powerlaw_blockdependent"`` for one block.

  Args:
    key: PRNG key.
    input_size: ``I``.
    hidden_size: ``H``, a multiple of ``num_heads``.
    num_heads: the number of heads of the block-diagonal recurrence; stored
      in the params. 1 (one dense ``(H, 4H)`` block) fits any ``H``; xlstm's
      default is 4.
    forget_gate: ``"sigmoid"`` (xlstm's) or ``"exp"``; stored in the params.
    dtype: dtype of every parameter.

  Returns:
    :class:`SLSTMParams` with ``w_x (I, 4H)``, ``r (num_heads, D, 4D)``,
    ``b (4H,)``, ``num_heads`` and ``forget_gate``.

  Raises:
    ValueError: ``num_heads`` does not divide ``hidden_size``, or an unknown
      ``forget_gate``.

  Example:
    >>> params = jaxlstm.slstm_init(jax.random.key(0), 3, 8, num_heads=2, forget_gate="exp")
    >>> params.r.shape, float(jnp.abs(params.r).max()), params.b.reshape(4, 2, 4)[1, 0]  # gate f, head 0
    ((2, 4, 16), 0.0, Array([ 5.       , -3.6306772, -5.6256094, -7.       ], dtype=float32))
  """
  checks.check_positive_int("input_size", input_size)
  checks.check_positive_int("hidden_size", hidden_size)
  check_heads(num_heads, hidden_size)
  check_forget_gate(forget_gate)
  if not checks.is_float(dtype):
    raise TypeError(f"dtype must be a floating-point dtype; got {jnp.dtype(dtype)}")
  H, K = hidden_size, int(num_heads)
  D = H // K
  w_x = (jax.random.normal(key, (input_size, 4 * H), jnp.float32) * (2.0 / (5.0 * input_size)) ** 0.5).astype(dtype)
  b = jnp.zeros((4 * H,), dtype).at[H : 2 * H].set(jnp.tile(powerlaw_forget_bias(D, dtype), K))
  return SLSTMParams(w_x=w_x, r=jnp.zeros((K, D, 4 * D), dtype), b=b, num_heads=K, forget_gate=forget_gate)


def slstm_zero_state(
  params: SLSTMParams, batch_shape: tuple[int, ...] = (), dtype: DTypeLike | None = None
) -> SLSTMState:
  """The empty state: ``h``, ``c``, ``n`` and ``m`` all zero, each ``(*batch_shape, H)``.

  ``n = 0`` marks the state as empty, which starts the stabilizer from the
  first input gate (see the module's docstring).

  Args:
    params: :class:`SLSTMParams`.
    batch_shape: the leading batch axes, e.g. ``(B,)``.
    dtype: the state's dtype; by default float32 for 16-bit params, else the
      params' dtype, as for :func:`jaxlstm.lstm_zero_state`.

  Returns:
    :class:`SLSTMState` of zeros.

  Example:
    >>> params = jaxlstm.slstm_init(jax.random.key(0), 3, 4, dtype=jnp.bfloat16)
    >>> state = jaxlstm.slstm_zero_state(params, (2,))
    >>> state.m.shape, state.m.dtype
    ((2, 4), dtype('float32'))
  """
  dtype = state_dtype(params.dtype) if dtype is None else dtype
  zeros = jnp.zeros((*tuple(batch_shape), params.hidden_size), dtype)
  return SLSTMState(zeros, zeros, zeros, zeros)


def check_layout(params: SLSTMParams) -> None:
  """Refuses params whose ``r`` does not have the ``(num_heads, D, 4D)`` shape that ``num_heads`` and ``H`` give.

  Example:
    >>> from jaxlstm._src.cells.slstm import check_layout
    >>> params = jaxlstm.slstm_init(jax.random.key(0), 3, 8, num_heads=2)
    >>> check_layout(params._replace(num_heads=4))
    Traceback (most recent call last):
    ValueError: params.r must have shape (num_heads, D, 4D) = (4, 2, 8) for num_heads=4 and H=8; got (2, 4, 16)
  """
  K, H = params.num_heads, params.hidden_size
  check_heads(K, H)
  check_forget_gate(params.forget_gate)
  want = (K, H // K, 4 * (H // K))
  if tuple(params.r.shape) != want:
    raise ValueError(
      f"params.r must have shape (num_heads, D, 4D) = {want} for num_heads={K} and H={H}; got {tuple(params.r.shape)}"
    )


def recurrent_projection(params: SLSTMParams, h: jax.Array) -> jax.Array:
  """``h R``, head by head: ``(..., H)`` to the gates' ``(..., 4H)`` in the layout of ``w_x``.

  Example:
    >>> from jaxlstm._src.cells.slstm import recurrent_projection
    >>> params = jaxlstm.slstm_init(jax.random.key(0), 3, 8, num_heads=2)
    >>> params = params._replace(r=jnp.ones_like(params.r).at[1].set(0.0))  # head 1 has no recurrence
    >>> recurrent_projection(params, jnp.ones(8)).reshape(4, 2, 4)[:, :, 0]  # (gate, head)
    Array([[4., 0.],
           [4., 0.],
           [4., 0.],
           [4., 0.]], dtype=float32)
  """
  K, D = params.num_heads, params.head_size
  batch = h.shape[:-1]
  zr = jnp.einsum("...kd,kde->...ke", h.reshape(*batch, K, D), params.r)  # (..., K, 4D)
  # (..., K, 4, D) -> (..., 4, K, D): gate-major, as along w_x's 4H axis.
  return jnp.swapaxes(zr.reshape(*batch, K, 4, D), -3, -2).reshape(*batch, 4 * K * D)


def slstm_step(params: SLSTMParams, state: SLSTMState, x: jax.Array) -> tuple[SLSTMState, jax.Array]:
  r"""One sLSTM step, stabilized; the equations are in :mod:`jaxlstm._src.cells.slstm`'s docstring.

  .. math::

    m_t = \max(\log f_t + m_{t-1}, \log i_t) \qquad
    c_t = f'_t c_{t-1} + i'_t z_t \qquad n_t = f'_t n_{t-1} + i'_t \qquad h_t = o_t \odot c_t / n_t

  where ``n_{t-1} = 0`` (an empty state) gives ``m_t = log i_t`` and ``f'_t = 0``.

  Args:
    params: :class:`SLSTMParams`.
    state: :class:`SLSTMState` with ``h``, ``c``, ``n``, ``m``, each ``(..., H)``.
    x: input ``(..., I)``.

  Returns:
    ``(new_state, h)`` with ``h (..., H)``. The projections are computed in
    the params' dtype and the gates and state in the state's (float32 under
    bfloat16 params).

  Raises:
    ValueError: ``params.r``'s shape disagrees with ``num_heads``.

  References:
    Beck et al. (2024), xLSTM: Extended long short-term memory.
    arXiv:2405.04517, Section 2.2.

  Example:
    >>> params = jaxlstm.slstm_init(jax.random.key(0), 3, 4)
    >>> state, h = jaxlstm.slstm_step(params, jaxlstm.slstm_zero_state(params, (2,)), jnp.ones((2, 3)))
    >>> h.shape, bool((state.n == 1).all())  # the first step from the empty state
    ((2, 4), True)

    Pre-activations far beyond ``exp``'s range stay finite:

    >>> big = params._replace(w_x=params.w_x * 1e4, forget_gate="exp")
    >>> _, hs = jaxlstm.layer(big, jnp.ones((2, 7, 3)))
    >>> bool(jnp.isfinite(hs).all())
    True
  """
  check_layout(params)
  cdt = params.dtype
  c_prev, n_prev, m_prev = state.c, state.n, state.m
  sdt = c_prev.dtype
  zx = x.astype(cdt) @ params.w_x
  zh = recurrent_projection(params, state.h.astype(cdt))
  pre = (zx + zh + params.b).astype(sdt)
  i_raw, f_raw, z_raw, o_raw = jnp.split(pre, 4, axis=-1)
  log_f = f_raw if params.forget_gate == "exp" else jax.nn.log_sigmoid(f_raw)
  empty = n_prev == 0
  m = jnp.where(empty, i_raw, jnp.maximum(log_f + m_prev, i_raw))
  i_gate = jnp.exp(i_raw - m)
  # An empty state has nothing to forget: f' = 0. The inner where keeps the unused exp finite, which keeps
  # its gradient (zero times exp') from being NaN.
  f_gate = jnp.where(empty, 0.0, jnp.exp(jnp.where(empty, 0.0, log_f + m_prev - m)))
  c = f_gate * c_prev + i_gate * jnp.tanh(z_raw)
  n = f_gate * n_prev + i_gate
  h = jax.nn.sigmoid(o_raw) * c / n
  return SLSTMState(h, c, n, m), h


def slstm_options(params: SLSTMParams) -> dict:
  """The :func:`slstm_init` options that give ``params``' layout.

  Example:
    >>> from jaxlstm._src.cells.slstm import slstm_options
    >>> slstm_options(jaxlstm.slstm_init(jax.random.key(0), 3, 8, num_heads=2))
    {'dtype': dtype('float32'), 'num_heads': 2, 'forget_gate': 'sigmoid'}
  """
  return {"dtype": params.dtype, "num_heads": params.num_heads, "forget_gate": params.forget_gate}


CELL = Cell(
  name="slstm",
  params_type=SLSTMParams,
  state_type=SLSTMState,
  init=slstm_init,
  step=slstm_step,
  zero_state=slstm_zero_state,
  options_of=slstm_options,
  gates=4,
  options=("num_heads", "forget_gate"),
  peers={"xlstm": "sLSTMLayer"},
)
