"""One recurrent layer over a sequence: :func:`layer` for any registered cell, and ``lstm``, ``gru``, ``rnn``.

Each call is checked once here, at the entry point; then the kernel registry
picks the kernel (``impl="auto"``: the fastest that can run the call), and
the layer shell (:mod:`jaxlstm.kernels.shell`) runs it. :func:`explain` says which
kernel a call runs on and why the others do not.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import jax
from jax.typing import DTypeLike

from jaxlstm._src import checks, kernels, regularizers, shell
from jaxlstm._src.cells.gru import GRUParams
from jaxlstm._src.cells.lstm import LSTMParams
from jaxlstm._src.cells.registry import cell_of
from jaxlstm._src.cells.rnn import RNNParams, check_call_activation
from jaxlstm._src.types import Array

logger = logging.getLogger("jaxlstm")


def zero_state(params: Any, batch_shape: tuple[int, ...] = (), dtype: DTypeLike | None = None) -> Any:
  """The all-zero initial state of any registered cell, with leaves ``(*batch_shape, F)``.

  Args:
    params: one layer's params, of any registered cell.
    batch_shape: the leading batch axes, e.g. ``(B,)``. For a convolutional cell (``feature_axes > 1``) they
      are followed by the input's spatial axes, ``(B, H, W)``, and the state's leaves are ``(B, H', W', F)``
      with the sizes the input convolution gives (:func:`jaxlstm.convlstm_zero_state`).
    dtype: the state's dtype; the cell's default (float32 for 16-bit params) when ``None``.

  Returns:
    The cell's state record, all zeros.

  Example:
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5, proj_size=2)
    >>> state = jaxlstm.zero_state(params, (4,))
    >>> state.h.shape, state.c.shape
    ((4, 2), (4, 5))
  """
  return cell_of(params).zero_state(params, tuple(batch_shape), dtype)


def check_params(name: str, params: Any, cls: type | None = None) -> None:
  """Checks one layer's params: a registered cell (``cls`` if given) whose arrays share one float dtype.

  Args:
    name: the argument's name, for the messages.
    params: the value to check.
    cls: the params type it must have, or ``None`` for any registered cell.

  Raises:
    TypeError: naming ``name`` (and the leaf at fault), otherwise.

  Example:
    >>> from jaxlstm._src.layers import check_params
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> check_params("params", params)
    >>> check_params("params", params._replace(b=params.b.astype(jnp.float16)))
    Traceback (most recent call last):
    TypeError: params.b has dtype float16 but params.w_x has float32; all params must share one dtype
  """
  if cls is not None and not isinstance(params, cls):
    raise TypeError(f"{name} must be {cls.__name__}; got {type(params).__name__}")
  cell_of(params, name)
  leaves = jax.tree_util.tree_leaves_with_path(params)
  if not leaves:
    raise ValueError(f"{name} holds no arrays")
  path0, first = leaves[0]
  checks.check_float(f"{name}{jax.tree_util.keystr(path0)}", first)
  for path, leaf in leaves:
    if leaf.dtype != first.dtype:
      raise TypeError(
        f"{name}{jax.tree_util.keystr(path)} has dtype {leaf.dtype} but "
        f"{name}{jax.tree_util.keystr(path0)} has {first.dtype}; all params must share one dtype"
      )


def check_options(*, impl: Any, remat: Any) -> None:
  """Checks the kernel options of a call: ``impl`` and ``remat``.

  Raises:
    ValueError: ``impl`` is not ``"auto"`` or a kernel's name, or ``remat`` is not a positive int or ``None``.

  Example:
    >>> from jaxlstm._src.layers import check_options
    >>> check_options(impl="auto", remat=16)
    >>> check_options(impl="auto", remat=0)
    Traceback (most recent call last):
    ValueError: remat must be a positive int or None; got 0
  """
  kernels.check_impl(impl)
  if remat is not None and (isinstance(remat, bool) or not isinstance(remat, int) or remat < 1):
    raise ValueError(f"remat must be a positive int or None; got {remat!r}")


def check_sequence(
  params: Any, xs: Any, lengths: Any, mask: Any, resets: Any, *, time_major: bool, xs_name: str = "xs"
):
  """Checks ``xs`` and the missing-data arrays against a layer's params; returns them as arrays.

  Args:
    params: one layer's params, which give the input size and dtype.
    xs: inputs ``(*batch, T, I)``, or ``(T, *batch, I)`` if ``time_major``.
    lengths, mask, resets: as :func:`jaxlstm.layer` takes them, or ``None``.
    time_major: the layout of ``xs``, ``mask`` and ``resets``.
    xs_name: the name of ``xs`` in the messages.

  Returns:
    ``(xs, lengths, mask, resets)`` as arrays (``None`` stays ``None``).

  Raises:
    ValueError, TypeError: naming the argument, for a shape or dtype that does not fit.

  Example:
    >>> from jaxlstm._src.layers import check_sequence
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> xs, lengths, mask, resets = check_sequence(params, jnp.ones((2, 7, 3)), [7, 3], None, None,
    ...                                            time_major=False)
    >>> lengths.shape, mask
    ((2,), None)
    >>> check_sequence(params, jnp.ones((2, 7, 4)), None, None, None, time_major=False)
    Traceback (most recent call last):
    ValueError: xs must have shape (*batch, T, I) with I=3 (the params' input size); got shape (2, 7, 4)
  """
  xs = checks.as_array(xs_name, xs)
  T, batch_shape = checks.check_sequence(
    xs_name, xs, params.input_size, time_major=time_major, feature_axes=cell_of(params).feature_axes
  )
  checks.check_dtype_match(xs_name, xs, params.dtype)
  lengths, mask, resets = checks.check_missing_data(lengths, mask, resets, T, batch_shape, time_major=time_major)
  return xs, lengths, mask, resets


def check_state(name: str, params: Any, state: Any, batch_shape: tuple[int, ...]) -> Any:
  """The initial state: zeros when ``state`` is ``None``, else ``state`` once checked against the params.

  Args:
    name: the argument's name, for the messages.
    params: one layer's params.
    state: the caller's state, or ``None``.
    batch_shape: the batch axes of the inputs, followed by their spatial axes for a convolutional cell
      (:func:`zero_state_shape`).

  Returns:
    The state to start from, with leaves ``(*batch_shape, F)``.

  Raises:
    ValueError, TypeError: naming the field at fault, when ``state`` does not fit the params and batch.

  Example:
    >>> from jaxlstm._src.layers import check_state
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> check_state("state", params, None, (2,)).h.shape
    (2, 5)
    >>> check_state("state", params, jaxlstm.lstm_zero_state(params, (3,)), (2,))
    Traceback (most recent call last):
    ValueError: state.h must have shape (2, 5); got (3, 5)
  """
  expected = zero_state(params, batch_shape)
  if state is None:
    return expected
  checks.check_state(name, state, expected)
  return state


def batch_shape_of(xs: jax.Array, *, time_major: bool, feature_axes: int = 1) -> tuple[int, ...]:
  """The batch axes of ``xs``: all but time and the ``feature_axes`` trailing ones.

  Example:
    >>> from jaxlstm._src.layers import batch_shape_of
    >>> batch_shape_of(jnp.ones((2, 4, 7, 3)), time_major=False), batch_shape_of(jnp.ones((7, 2, 3)), time_major=True)
    ((2, 4), (2,))
    >>> batch_shape_of(jnp.ones((2, 7, 8, 8, 3)), time_major=False, feature_axes=3)
    (2,)
  """
  n = xs.ndim - feature_axes
  return tuple(xs.shape[1:n]) if time_major else tuple(xs.shape[: n - 1])


def zero_state_shape(xs: jax.Array, *, time_major: bool, feature_axes: int = 1) -> tuple[int, ...]:
  """The ``batch_shape`` that :func:`zero_state` takes for a call on ``xs``: every axis but time and the last.

  The batch axes for a vector cell; the batch axes and then the spatial ones for a convolutional cell, whose
  state's spatial sizes follow from the input's.

  Example:
    >>> from jaxlstm._src.layers import zero_state_shape
    >>> zero_state_shape(jnp.ones((2, 7, 3)), time_major=False), zero_state_shape(jnp.ones((7, 2, 3)), time_major=True)
    ((2,), (2,))
    >>> zero_state_shape(jnp.ones((2, 7, 8, 6, 3)), time_major=False, feature_axes=3)  # (B, T, H, W, C)
    (2, 8, 6)
  """
  return (*batch_shape_of(xs, time_major=time_major, feature_axes=feature_axes), *xs.shape[xs.ndim - feature_axes : -1])


def layer_call(
  params: Any, *, lengths, mask, resets, reverse, time_major, remat, in_loop: tuple[str, ...] = ()
) -> kernels.LayerCall:
  """The static description of a call that the kernels' ``why_not`` read.

  Example:
    >>> from jaxlstm._src.layers import layer_call
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> call = layer_call(params, lengths=jnp.array([7, 3]), mask=None, resets=None, reverse=True,
    ...                   time_major=False, remat=None)
    >>> call.cell.name, call.lengths, call.mask, call.reverse
    ('gru', True, False, True)
  """
  return kernels.LayerCall(
    cell=cell_of(params),
    params=params,
    lengths=lengths is not None,
    mask=mask is not None,
    resets=resets is not None,
    reverse=bool(reverse),
    time_major=bool(time_major),
    remat=remat,
    in_loop=tuple(in_loop),
  )


def run_checked(
  params: Any,
  xs: jax.Array,
  state: Any,
  *,
  lengths,
  mask,
  resets,
  reverse: bool,
  time_major: bool,
  unroll,
  impl: str,
  remat,
  name: str = "params",
  reg: regularizers.Regularizers = regularizers.NONE,
  key: jax.Array | None = None,
):
  """Runs one layer whose arguments are already checked: picks the kernel, runs the shell, casts ``hs``.

  :func:`jaxlstm.layer` and :func:`jaxlstm.stack` check their arguments once and then call this, so a
  stack does not check every layer's inputs again. Arguments and returns as :func:`jaxlstm.layer`, with
  ``state`` required, ``name`` used in the debug log, and the regularizers checked into ``reg``
  (:func:`jaxlstm.regularizers.check_regularizers`) with their ``key``.

  Example:
    >>> from jaxlstm._src.layers import run_checked
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> state, hs = run_checked(params, jnp.ones((2, 7, 3)), jaxlstm.zero_state(params, (2,)), lengths=None,
    ...                         mask=None, resets=None, reverse=False, time_major=False, unroll=None,
    ...                         impl="auto", remat=None)
    >>> hs.shape
    (2, 7, 5)
  """
  call = layer_call(
    params,
    lengths=lengths,
    mask=mask,
    resets=resets,
    reverse=reverse,
    time_major=time_major,
    remat=remat,
    in_loop=reg.in_loop,
  )
  kernel = kernels.select(call, impl)
  logger.debug("%s: %s layer runs on the %r kernel (impl=%r)", name, call.cell.name, kernel.name, impl)
  out_dtype = xs.dtype
  kw = dict(
    lengths=lengths, mask=mask, resets=resets, reverse=reverse, time_major=time_major, unroll=unroll, remat=remat
  )
  if not reg.active:
    final, hs = shell.run(kernel.run, params, xs, state, **kw)
    return final, hs.astype(out_dtype)
  params, xs, masks = regularizers.prepare(reg, params, xs, key, cell=call.cell, time_major=time_major)
  if not reg.in_loop:
    final, hs = shell.run(kernel.run, params, xs, state, **kw)
    return final, hs.astype(out_dtype)
  # The selected kernel scans the cell's own step (Kernel.scans_step): scan the wrapped step instead.
  step = regularizers.looped_step(call.cell, reg, params, training=key is not None)
  (final, _), hs = shell.run(functools.partial(kernels.reference.scan_core, step), params, xs, (state, masks), **kw)
  return final, hs.astype(out_dtype)


def layer(
  params: Any,
  xs: jax.Array,
  state: Any = None,
  *,
  lengths: Array | None = None,
  mask: Array | None = None,
  resets: Array | None = None,
  reverse: bool = False,
  time_major: bool = False,
  unroll: int | bool | None = None,
  impl: str = "auto",
  remat: int | None = None,
  input_dropout: float = 0.0,
  recurrent_dropout: float = 0.0,
  zoneout: float | dict = 0.0,
  weight_drop: float = 0.0,
  key: jax.Array | None = None,
) -> tuple[Any, jax.Array]:
  """Runs one recurrent layer of any registered cell over a sequence.

  ``impl="auto"`` (the default) runs the call on the fastest kernel that can
  run it: on a CPU the native or fused kernel of its cell, and the reference
  scan for in-loop regularizers. ``impl="fused"``, ``"pallas"``,
  ``"reference"`` or another kernel's name asks for one kernel, and raises with the reason if that kernel cannot run
  the call; nothing falls back silently. :func:`jaxlstm.explain` tells
  which kernel a call runs on.

  Args:
    params: one layer's params, of any registered cell.
    xs: inputs ``(*batch, T, I)``, or ``(T, *batch, I)`` if ``time_major``,
      in the params' dtype. ``batch`` may be empty or have several axes.
    state: initial state; zeros when ``None``.
    lengths: ``(*batch,)`` integer lengths of right-padded rows. Past its length
      a row's state is frozen and its outputs are zero; the final state is the
      one at its last valid step.
    mask: ``(*batch, T)`` bools (time-major: ``(T, *batch)``); a ``False`` step
      keeps the previous state and outputs zero.
    resets: same shape as ``mask``; ``True`` resets the state to the initial
      state before that step (packed sequences).
    reverse: process from the end; outputs keep the original order, and with
      ``lengths`` each row is reversed within its own length.
    time_major: whether time is the leading axis.
    unroll: the loops' unroll factor; ``None`` lets the kernel choose (8 on
      the fused kernel on a GPU, else 1).
    impl: ``"auto"`` or a kernel's name (see :func:`jaxlstm.kernel_names`).
    remat: checkpoint every ``remat`` steps (fused kernels), so that training
      memory grows with ``T / remat`` chunk states instead of every step's
      gates: for very long sequences.
    input_dropout: variational dropout on the input, one mask per sequence
      (Keras' ``dropout``); every kernel runs it.
    recurrent_dropout: variational dropout on ``h_{t-1}`` in the recurrent
      projection, one mask per sequence and gate (Keras' ``recurrent_dropout``);
      runs on the reference kernel.
    zoneout: the probability that a state unit keeps its previous value at a
      step, for every state field, or ``{field: rate}``; without ``key`` the
      expectation is used (evaluation). Runs on the reference kernel.
    weight_drop: DropConnect on ``w_h``, one mask per call; every kernel runs it.
    key: PRNG key for the regularizers' masks; needed when a dropout rate is
      positive. :mod:`jaxlstm.regularizers` gives their exact definitions.

  Returns:
    ``(final_state, hs)``; ``hs`` is ``(*batch, T, F)`` (time-major
    ``(T, *batch, F)``) in the dtype of ``xs``, ``F`` the cell's output size.
    ``T = 0`` returns the initial state and an empty ``hs``.

  Raises:
    ValueError, TypeError: with the argument's name, when a shape or dtype does
      not match the params, or when ``impl`` cannot run the call. See
      :func:`jaxlstm.scan` for the exact semantics of ``lengths``, ``mask``
      and ``resets``.

  Example:
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> state, hs = jaxlstm.layer(params, jnp.ones((2, 7, 3)), lengths=jnp.array([7, 4]))
    >>> hs.shape, state.h.shape, bool((hs[1, 4:] == 0).all())
    ((2, 7, 5), (2, 5), True)

    Training with Keras' recurrent dropout and zoneout on ``c``, then evaluating (no key: no dropout, and
    zoneout's expectation):

    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> _, hs = jaxlstm.layer(params, jnp.ones((2, 7, 3)), recurrent_dropout=0.25, zoneout={"c": 0.5},
    ...                       key=jax.random.key(1))
    >>> _, hs_eval = jaxlstm.layer(params, jnp.ones((2, 7, 3)), zoneout={"c": 0.5})
    >>> hs.shape, jaxlstm.explain(params, jnp.ones((2, 7, 3)), zoneout={"c": 0.5}).kernel
    ((2, 7, 5), 'reference')
  """
  return _layer(
    params,
    xs,
    state,
    lengths=lengths,
    mask=mask,
    resets=resets,
    reverse=reverse,
    time_major=time_major,
    unroll=unroll,
    impl=impl,
    remat=remat,
    input_dropout=input_dropout,
    recurrent_dropout=recurrent_dropout,
    zoneout=zoneout,
    weight_drop=weight_drop,
    key=key,
  )


def _layer(
  params,
  xs,
  state,
  *,
  cls=None,
  lengths,
  mask,
  resets,
  reverse,
  time_major,
  unroll,
  impl,
  remat=None,
  input_dropout=0.0,
  recurrent_dropout=0.0,
  zoneout=0.0,
  weight_drop=0.0,
  key=None,
):
  """:func:`layer` with every argument checked once (``params`` against ``cls`` when given)."""
  check_params("params", params, cls)
  check_options(impl=impl, remat=remat)
  reg = regularizers.check_regularizers(
    cell_of(params),
    input_dropout=input_dropout,
    recurrent_dropout=recurrent_dropout,
    zoneout=zoneout,
    weight_drop=weight_drop,
    key=key,
  )
  xs, lengths, mask, resets = check_sequence(params, xs, lengths, mask, resets, time_major=time_major)
  state = check_state(
    "state", params, state, zero_state_shape(xs, time_major=time_major, feature_axes=cell_of(params).feature_axes)
  )
  return run_checked(
    params,
    xs,
    state,
    lengths=lengths,
    mask=mask,
    resets=resets,
    reverse=reverse,
    time_major=time_major,
    unroll=unroll,
    impl=impl,
    remat=remat,
    reg=reg,
    key=key,
  )


def lstm(
  params: LSTMParams,
  xs: jax.Array,
  state: Any = None,
  *,
  lengths: Array | None = None,
  mask: Array | None = None,
  resets: Array | None = None,
  reverse: bool = False,
  time_major: bool = False,
  unroll: int | bool | None = None,
  impl: str = "auto",
  remat: int | None = None,
) -> tuple[Any, jax.Array]:
  """Runs one LSTM layer (:func:`jaxlstm.lstm_step`) over a sequence: :func:`jaxlstm.layer` for LSTMs.

  The default ``impl="auto"`` runs every LSTM (plain, peephole,
  layer-normalized, projected, with ``resets``) on the fused kernel
  (:mod:`jaxlstm.kernels.fused`), and in-loop regularizers on the reference
  scan. ``impl="pallas"`` runs a plain LSTM's time loop in one Pallas kernel
  launch on a CUDA GPU (:mod:`jaxlstm.kernels.pallas`); ``impl="cudnn"`` runs
  a plain float32 LSTM as one cuDNN call on a CUDA GPU (``lengths`` but no
  ``mask``, ``resets``, ``reverse`` or ``time_major``). Arguments and returns
  as :func:`jaxlstm.layer`; ``hs`` is ``(*batch, T, P)``.

  Example:
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> state, hs = jaxlstm.lstm(params, jnp.ones((2, 7, 3)))
    >>> hs.shape, state.c.shape
    ((2, 7, 5), (2, 5))
  """
  return _layer(
    params,
    xs,
    state,
    cls=LSTMParams,
    lengths=lengths,
    mask=mask,
    resets=resets,
    reverse=reverse,
    time_major=time_major,
    unroll=unroll,
    impl=impl,
    remat=remat,
  )


def gru(
  params: GRUParams,
  xs: jax.Array,
  state: Any = None,
  *,
  lengths: Array | None = None,
  mask: Array | None = None,
  resets: Array | None = None,
  reverse: bool = False,
  time_major: bool = False,
  unroll: int | bool | None = None,
  impl: str = "auto",
  remat: int | None = None,
) -> tuple[Any, jax.Array]:
  """Runs one GRU layer (:func:`jaxlstm.gru_step`) over a sequence: :func:`jaxlstm.layer` for GRUs.

  Arguments and returns as :func:`jaxlstm.layer`; ``hs`` is ``(*batch, T, H)``.

  Example:
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> jaxlstm.gru(params, jnp.ones((2, 7, 3)))[1].shape
    (2, 7, 5)
  """
  return _layer(
    params,
    xs,
    state,
    cls=GRUParams,
    lengths=lengths,
    mask=mask,
    resets=resets,
    reverse=reverse,
    time_major=time_major,
    unroll=unroll,
    impl=impl,
    remat=remat,
  )


def rnn(
  params: RNNParams,
  xs: jax.Array,
  state: Any = None,
  *,
  activation: str | None = None,
  lengths: Array | None = None,
  mask: Array | None = None,
  resets: Array | None = None,
  reverse: bool = False,
  time_major: bool = False,
  unroll: int | bool | None = None,
  impl: str = "auto",
  remat: int | None = None,
) -> tuple[Any, jax.Array]:
  """Runs one Elman RNN layer (:func:`jaxlstm.rnn_step`) over a sequence: :func:`jaxlstm.layer` for RNNs.

  The activation is ``params.activation`` (set by :func:`jaxlstm.rnn_init` or
  a converter); ``activation`` may restate it, and a different value raises.
  Other arguments and returns as :func:`jaxlstm.layer`.

  Example:
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 5, activation="relu")
    >>> state, hs = jaxlstm.rnn(params, jnp.ones((2, 7, 3)))
    >>> hs.shape, bool((hs >= 0).all())
    ((2, 7, 5), True)
  """
  if isinstance(params, RNNParams):
    check_call_activation(params, activation)
  return _layer(
    params,
    xs,
    state,
    cls=RNNParams,
    lengths=lengths,
    mask=mask,
    resets=resets,
    reverse=reverse,
    time_major=time_major,
    unroll=unroll,
    impl=impl,
    remat=remat,
  )


def explain(
  params: Any,
  xs: jax.Array,
  state: Any = None,
  *,
  lengths: Array | None = None,
  mask: Array | None = None,
  resets: Array | None = None,
  reverse: bool = False,
  time_major: bool = False,
  impl: str = "auto",
  remat: int | None = None,
  unroll: int | bool | None = None,
  recurrent_dropout: float = 0.0,
  zoneout: float | dict = 0.0,
  **ignored: Any,
) -> kernels.KernelChoice | tuple[kernels.KernelChoice, ...]:
  """Which kernel a call of :func:`jaxlstm.layer` (or :func:`jaxlstm.stack`) would run on, and why.

  Takes the same arguments as the call (``state``, ``unroll`` and the options
  that do not decide the kernel, such as ``key`` or ``input_dropout``, are
  accepted and ignored) and runs nothing.

  Args:
    params: one layer's params, or a stack's tuple from :func:`jaxlstm.stack_init`.
    xs, lengths, mask, resets, reverse, time_major, impl, remat: as the call.
    recurrent_dropout, zoneout: as the call; they act inside the loop, which
      only the reference kernel runs.
    **ignored: the call's other options (``key``, ``input_dropout``,
      ``weight_drop``, a stack's ``dropout`` and ``merge``...).

  Returns:
    A :class:`jaxlstm.KernelChoice` (``.kernel``, ``.reasons``; ``print`` it
    for a summary), or for a stack a tuple with one per layer and direction.

  Raises:
    ValueError: as the call would, for example when ``impl`` cannot run it.

  Example:
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5, layer_norm=True)
    >>> jaxlstm.explain(params, jnp.ones((2, 7, 3))).kernel
    'fused'
    >>> choice = jaxlstm.explain(params, jnp.ones((2, 7, 3)), zoneout=0.1)
    >>> choice.kernel
    'reference'
    >>> choice.reasons["fused"]
    "zoneout acts inside the time loop, on the cell's own step; use impl='reference'"
  """
  del state, unroll, ignored
  from jaxlstm._src.stack import Bidirectional, check_stack  # stack builds on this module

  check_options(impl=impl, remat=remat)
  if isinstance(params, (tuple, list)) and not hasattr(params, "_fields"):
    check_stack(params, None)
    layers = []
    for i, lay in enumerate(params):
      dirs = (
        [(f"params[{i}].forward", lay.forward, reverse), (f"params[{i}].backward", lay.backward, True)]
        if (isinstance(lay, Bidirectional))
        else [(f"params[{i}]", lay, reverse)]
      )
      layers.extend(dirs)
  else:
    check_params("params", params)
    layers = [("params", params, reverse)]
  check_sequence(layers[0][1], xs, lengths, mask, resets, time_major=time_major)
  out = []
  for name, p, rev in layers:
    # Only whether an in-loop regularizer is on decides the kernel: check the rates, not the key.
    reg = regularizers.check_regularizers(
      cell_of(p),
      recurrent_dropout=recurrent_dropout,
      zoneout=zoneout,
      key=jax.random.key(0) if recurrent_dropout else None,
      name=name,
    )
    call = layer_call(
      p, lengths=lengths, mask=mask, resets=resets, reverse=rev, time_major=time_major, remat=remat, in_loop=reg.in_loop
    )
    kernel = kernels.select(call, impl)
    note = None if kernel.note is None else kernel.note(call)
    out.append(kernels.KernelChoice(name, kernel.name, kernels.reasons(call), kernels.passed_over(call), note))
  return out[0] if len(out) == 1 and layers[0][0] == "params" else tuple(out)
