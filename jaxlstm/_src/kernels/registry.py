"""The kernel record, the registry, and how ``impl`` picks a kernel.

A kernel runs the time-major, flattened core of one layer; the layer shell
(:mod:`jaxlstm.kernels.shell`) does everything around it. A kernel is a
:class:`Kernel` record: a name, ``why_not(call)``, which says why it cannot
run a call (``None`` when it can), and ``run``. ``impl="auto"`` takes the
first kernel, in ``rank`` order, that can run the call; an explicit ``impl``
that cannot raises with its reason. Nothing falls back silently.

The contract of ``run``::

  run(params, xs, state, valid, resets, *, lengths, unroll, remat) -> (final_state, ys)

  xs:      (T, B, I) time-major inputs, T >= 1, already in processing order
           (reversed by the shell for a backward pass), in the params' dtype
  state:   the cell's state with leaves (B, F)
  valid:   (T, B) bool or None; an invalid step leaves the state unchanged
  resets:  (T, B) bool or None; True sets the state back to ``state`` before that step
  lengths: (B,) int32 or None; given when ``valid`` is exactly ``t < lengths``
           (no mask), for kernels that take lengths rather than a mask
  ys:      (T, B, F_out); its values at invalid steps are ignored (the shell zeroes them)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from jaxlstm._src.cells.registry import Cell


class LayerCall(NamedTuple):
  """The static facts about one layer call that decide which kernels can run it.

  Attributes:
    cell: the layer's :class:`~jaxlstm.Cell` record.
    params: the layer's params, for their options and dtype; never traced values.
    lengths, mask, resets: whether the call gives each of them.
    reverse: whether the layer runs backwards in time.
    time_major: whether the call's arrays are time-major.
    remat: the call's ``remat``, or ``None``.
    in_loop: the names of the call's regularizers that act inside the time
      loop (``"recurrent_dropout"``, ``"zoneout"``), which only a kernel that
      scans the cell's own step can run; empty for most calls.

  Example:
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("lstm"), params=params, lengths=False, mask=False,
    ...                          resets=True, reverse=False, time_major=False, remat=10)
    >>> jaxlstm.kernels.fused.why_not(call)
    'it takes remat or resets, not both'
  """

  cell: Cell
  params: Any  # the layer's params (for its options and dtype); never traced values
  lengths: bool  # lengths given
  mask: bool  # mask given
  resets: bool  # resets given
  reverse: bool
  time_major: bool
  remat: int | None
  in_loop: tuple[str, ...] = ()


def in_loop_reason(call: LayerCall) -> str | None:
  """Why a kernel with its own loop body cannot run ``call``: the call's in-loop regularizers; or ``None``.

  Example:
    >>> from jaxlstm._src.kernels.registry import in_loop_reason
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("lstm"), params=params, lengths=False, mask=False,
    ...                          resets=False, reverse=False, time_major=False, remat=None, in_loop=("zoneout",))
    >>> in_loop_reason(call)
    "zoneout acts inside the time loop, on the cell's own step; use impl='reference'"
  """
  if not call.in_loop:
    return None
  names = " and ".join(call.in_loop)
  return (
    f"{names} {'act' if len(call.in_loop) > 1 else 'acts'} inside the time loop, on the cell's own step; "
    f"use impl='reference'"
  )


class Kernel(NamedTuple):
  """The record of one kernel.

  Attributes:
    name: the ``impl`` value that selects it.
    why_not: ``why_not(call: LayerCall) -> str | None``: why it cannot run the
      call, in words that complete "impl=... cannot run this layer: ...", or
      ``None``.
    run: the core, with the contract in this module's docstring.
    rank: ``impl="auto"`` tries kernels from the lowest rank up: the fastest
      general kernel should have the lowest.
    scans_step: whether ``run`` is :func:`~jaxlstm.kernels.reference.scan_core` over the cell's own step,
      so that the layer may hand it a step with in-loop regularizers wrapped around it
      (:attr:`LayerCall.in_loop`); only the reference kernel does.
    auto_skip: ``auto_skip(call) -> str | None``, or ``None``: why ``impl="auto"`` passes the kernel over for
      a call that it can run, where another kernel measured faster (an explicit ``impl`` still runs it).
    note: ``note(call) -> str | None``, or ``None``: how the kernel runs a call, where that depends on the
      call (the native kernel's training loops below ``native.TRAIN_MIN_HIDDEN``); :func:`jaxlstm.explain`
      shows it beside "chosen".

  Example:
    >>> from jaxlstm.kernels import fused
    >>> fused.KERNEL.name, fused.KERNEL.rank, fused.KERNEL.run is fused.run
    ('fused', 10, True)

    :func:`register_kernel` shows a kernel built from scratch.
  """

  name: str
  why_not: Callable[[LayerCall], str | None]
  run: Callable[..., tuple[Any, Any]]
  rank: int
  scans_step: bool = False
  auto_skip: Callable[[LayerCall], str | None] | None = None
  note: Callable[[LayerCall], str | None] | None = None


_KERNELS: dict[str, Kernel] = {}


def register_kernel(kernel: Kernel) -> Kernel:
  """Adds ``kernel`` to the registry under its name; returns it.

  Raises:
    TypeError: ``kernel`` is not a :class:`Kernel`.
    ValueError: the name is ``"auto"`` or already taken by another kernel.

  Example:
    A kernel for GRUs, here the reference core under a name of its own; its low rank puts it first
    for ``impl="auto"``:

    >>> from jaxlstm.kernels import reference
    >>> def why_not(call):
    ...   if call.cell.name != "gru":
    ...     return f"it runs GRU layers only, not {call.cell.name}"
    ...   return "it keeps every step, so it takes no remat" if call.remat is not None else None
    >>> mine = jaxlstm.Kernel(name="mine", why_not=why_not, run=reference.run, rank=1)
    >>> jaxlstm.register_kernel(mine).name
    'mine'
    >>> jaxlstm.explain(jaxlstm.gru_init(jax.random.key(0), 3, 5), jnp.ones((2, 7, 3))).kernel
    'mine'
    >>> jaxlstm.lstm(jaxlstm.lstm_init(jax.random.key(0), 3, 5), jnp.ones((2, 7, 3)), impl="mine")
    Traceback (most recent call last):
    ValueError: impl='mine' cannot run this layer: it runs GRU layers only, not lstm
    >>> jaxlstm.unregister_kernel("mine") is mine
    True
  """
  if not isinstance(kernel, Kernel):
    raise TypeError(f"kernel must be a jaxlstm.Kernel record; got {type(kernel).__name__}")
  if kernel.name == "auto":
    raise ValueError("'auto' is not a kernel name: it asks for the fastest kernel that can run the call")
  old = _KERNELS.get(kernel.name)
  if old is not None and old != kernel:
    raise ValueError(f"a kernel named {kernel.name!r} is already registered")
  _KERNELS[kernel.name] = kernel
  return kernel


def unregister_kernel(name: str) -> Kernel:
  """Removes the kernel called ``name`` from the registry and returns its record (for plugins and tests).

  Raises:
    ValueError: no kernel has that name.

  Example:
    >>> cudnn = jaxlstm.unregister_kernel("cudnn")
    >>> jaxlstm.kernel_names()
    ('native', 'native_gru', 'fused', 'fused_gru', 'fused_rnn', 'parallel', 'pallas', 'pallas_gru', 'reference')
    >>> jaxlstm.register_kernel(cudnn) is cudnn
    True
  """
  check_impl(name)
  return _KERNELS.pop(name)


def kernel_names() -> tuple[str, ...]:
  """Every registered kernel's name, in ``impl="auto"`` order.

  Example:
    >>> jaxlstm.kernel_names()
    ('native', 'native_gru', 'fused', 'fused_gru', 'fused_rnn', 'parallel', 'pallas', 'pallas_gru', 'cudnn',
     'reference')
  """
  return tuple(k.name for k in sorted(_KERNELS.values(), key=lambda k: k.rank))


def impls() -> tuple[str, ...]:
  """The accepted values of ``impl``: ``"auto"`` and every kernel's name.

  Example:
    >>> jaxlstm.kernels.impls()
    ('auto', 'native', 'native_gru', 'fused', 'fused_gru', 'fused_rnn', 'parallel', 'pallas', 'pallas_gru', 'cudnn',
     'reference')
  """
  return ("auto", *kernel_names())


def check_impl(impl: Any) -> None:
  """Raises ``ValueError`` unless ``impl`` is one of :func:`impls`.

  Example:
    >>> jaxlstm.kernels.check_impl("fused")
    >>> jaxlstm.kernels.check_impl("triton")
    Traceback (most recent call last):
    ValueError: impl must be one of ('auto', 'native', 'native_gru', 'fused', 'fused_gru', 'fused_rnn', 'parallel',
      'pallas', 'pallas_gru', 'cudnn', 'reference'); got 'triton'
  """
  if not isinstance(impl, str) or (impl != "auto" and impl not in _KERNELS):
    raise ValueError(f"impl must be one of {impls()}; got {impl!r}")


def reasons(call: LayerCall) -> dict[str, str | None]:
  """``{kernel name: why it cannot run the call, or None}``, in ``impl="auto"`` order.

  Example:
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 5)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("rnn"), params=params, lengths=False, mask=False,
    ...                          resets=False, reverse=False, time_major=False, remat=None)
    >>> jaxlstm.kernels.reasons(call)
    {'native': 'it runs LSTM layers only, not rnn', 'native_gru': 'it runs GRU layers only, not rnn', 'fused':
      'it runs LSTM layers only, not rnn', 'fused_gru': 'it runs GRU layers only, not rnn', 'fused_rnn': None,
      'parallel': 'it runs cells whose gates read only the input (mingru, minlstm), not rnn, whose step is not
      linear in h', 'pallas': 'it runs LSTM layers only, not rnn', 'pallas_gru': 'it runs GRU layers only, not
      rnn', 'cudnn': 'it runs LSTM layers only, not rnn', 'reference': None}
  """
  return {name: why_not(_KERNELS[name], call) for name in kernel_names()}


def why_not(kernel: Kernel, call: LayerCall) -> str | None:
  """Why ``kernel`` cannot run ``call``: the in-loop regularizers for a kernel with a loop body of its own, else
  the kernel's own ``why_not``.

  Example:
    >>> from jaxlstm._src.kernels.registry import why_not
    >>> from jaxlstm.kernels import fused, reference
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("lstm"), params=params, lengths=False, mask=False,
    ...                          resets=False, reverse=False, time_major=False, remat=None, in_loop=("zoneout",))
    >>> why_not(fused.KERNEL, call), why_not(reference.KERNEL, call)
    ("zoneout acts inside the time loop, on the cell's own step; use impl='reference'", None)
  """
  if call.in_loop and not kernel.scans_step:
    return in_loop_reason(call)
  return kernel.why_not(call)


def passed_over(call: LayerCall) -> dict[str, str]:
  """``{kernel name: why impl="auto" passes it over}`` for the kernels that can run ``call`` but measured slower.

  Example:
    >>> params = jaxlstm.rnn_init(jax.random.key(0), 3, 5)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("rnn"), params=params, lengths=False, mask=False,
    ...                          resets=False, reverse=False, time_major=False, remat=None)
    >>> jaxlstm.kernels.passed_over(call)
    {}
  """
  whys = reasons(call)
  out = {name: skip_reason(_KERNELS[name], call) for name, why in whys.items() if why is None}
  return {name: why for name, why in out.items() if why is not None}


def skip_reason(kernel: Kernel, call: LayerCall) -> str | None:
  """Why ``impl="auto"`` passes ``kernel`` over for ``call``, which it can run: its measured choice, or ``None``.

  Example:
    >>> from jaxlstm._src.kernels.registry import skip_reason
    >>> from jaxlstm.kernels import fused
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("lstm"), params=params, lengths=False, mask=False,
    ...                          resets=False, reverse=False, time_major=False, remat=None)
    >>> skip_reason(fused.KERNEL, call) is None
    True
  """
  return None if kernel.auto_skip is None else kernel.auto_skip(call)


def select(call: LayerCall, impl: str) -> Kernel:
  """The kernel that runs ``call`` under ``impl``.

  Raises:
    ValueError: ``impl`` names a kernel that cannot run the call (with its
      reason), or no kernel can (with every kernel's reason).

  Example:
    >>> params = jaxlstm.lstm_init(jax.random.key(0), 3, 5, layer_norm=True)
    >>> call = jaxlstm.LayerCall(cell=jaxlstm.get_cell("lstm"), params=params, lengths=False, mask=False,
    ...                          resets=False, reverse=False, time_major=False, remat=None, in_loop=("zoneout",))
    >>> jaxlstm.kernels.select(call, "auto").name
    'reference'
    >>> jaxlstm.kernels.select(call, "fused")
    Traceback (most recent call last):
    ValueError: impl='fused' cannot run this layer: zoneout acts inside the time loop, on the cell's own step;
      use impl='reference'
  """
  check_impl(impl)
  if impl != "auto":
    why = why_not(_KERNELS[impl], call)
    if why is not None:
      raise ValueError(f"impl={impl!r} cannot run this layer: {why}")
    return _KERNELS[impl]
  whys = reasons(call)
  for name, reason in whys.items():
    if reason is None and skip_reason(_KERNELS[name], call) is None:
      return _KERNELS[name]
  detail = "; ".join(f"{name}: {reason}" for name, reason in whys.items())
  raise ValueError(f"no kernel can run this {call.cell.name} layer: {detail}")


class KernelChoice(NamedTuple):
  """Which kernel a layer call runs on, and why each other kernel does not: what :func:`jaxlstm.explain` returns.

  Attributes:
    layer: which layer of the call, e.g. ``"params"`` or ``"params[1].backward"``.
    kernel: the name of the kernel that runs it.
    reasons: ``{kernel name: None if it can run the call, else why not}``, in ``impl="auto"`` order.
    passed_over: ``{kernel name: why impl="auto" passes it over}`` for the kernels that can run the call but
      measured slower there (see :attr:`Kernel.auto_skip`); ``None`` or empty when there are none.
    note: how the chosen kernel runs the call, where that depends on the call (:attr:`Kernel.note`), or ``None``.

  Example:
    >>> choice = jaxlstm.explain(jaxlstm.rnn_init(jax.random.key(0), 3, 5), jnp.ones((2, 7, 3)))
    >>> print(choice)
    params: runs on 'fused_rnn'
      native: it runs LSTM layers only, not rnn
      native_gru: it runs GRU layers only, not rnn
      fused: it runs LSTM layers only, not rnn
      fused_gru: it runs GRU layers only, not rnn
      fused_rnn: chosen
      parallel: it runs cells whose gates read only the input (mingru, minlstm), not rnn, whose step is not
        linear in h
      pallas: it runs LSTM layers only, not rnn
      pallas_gru: it runs GRU layers only, not rnn
      cudnn: it runs LSTM layers only, not rnn
      reference: can run it
  """

  layer: str  # e.g. "params" or "params[1].backward"
  kernel: str  # the kernel that runs it
  reasons: dict  # {kernel name: None if it can run the call, else why not}
  passed_over: dict | None = None  # {kernel name: why impl="auto" passes it over} for kernels that can run it
  note: str | None = None  # how the chosen kernel runs it, where that depends on the call

  def __str__(self) -> str:
    lines = [f"{self.layer}: runs on {self.kernel!r}"]
    skipped = self.passed_over or {}
    for name, why in self.reasons.items():
      chosen = "chosen" if self.note is None else f"chosen ({self.note})"
      mark = chosen if name == self.kernel else ("can run it" if why is None else why)
      if name != self.kernel and why is None and name in skipped:
        mark = f"can run it; impl='auto' passes it over: {skipped[name]}"
      lines.append(f"  {name}: {mark}")
    return "\n".join(lines)
