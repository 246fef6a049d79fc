"""Data parallelism with ``jax.sharding``: a mesh with one ``batch`` axis.

The batch is split along its first axis across devices; params and optimizer
state are replicated; the compiler inserts the gradient all-reduce. The time
axis is never split, so each device runs the whole recurrence on its rows.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH = "batch"


def maybe_initialize(
  coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
  """Calls ``jax.distributed.initialize`` when a multi-host run is configured.

  It is configured by the arguments, or by the standard environment
  variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID`` (cluster launchers such as SLURM are detected by JAX
  itself when only ``JAX_COORDINATOR_ADDRESS`` is missing and the launcher's
  variables are set). Returns whether it initialized.

  Example:
    >>> jaxlstm.distributed.maybe_initialize()  # one process, no coordinator configured
    False
  """
  coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None and "JAX_NUM_PROCESSES" in os.environ:
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and "JAX_PROCESS_ID" in os.environ:
    process_id = int(os.environ["JAX_PROCESS_ID"])
  if coordinator is None and num_processes is None:
    return False
  # CPU processes exchange gradients through gloo; accelerators ignore this
  # setting. It must be set before any backend starts, hence unconditionally.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
  return True


def resolve_devices(devices: str | int | None) -> list[jax.Device] | None:
  """``None``: no mesh; ``"all"``: every device of every process; ``n``: the first ``n``.

  Raises:
    ValueError: ``devices`` is not ``"all"`` or a number between 1 and the number of devices.

  Example:
    >>> from jaxlstm.distributed import resolve_devices
    >>> resolve_devices(None), resolve_devices(1) == jax.devices()[:1], resolve_devices("all") == jax.devices()
    (None, True, True)
    >>> resolve_devices(0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: devices must be between 1 and ... (the devices visible); got 0
  """
  if devices is None:
    return None
  every = jax.devices()
  if devices == "all":
    return every
  try:
    n = int(devices)
  except (TypeError, ValueError):
    raise ValueError(f"devices must be 'all' or a positive number; got {devices!r}") from None
  if not 1 <= n <= len(every):
    raise ValueError(f"devices must be between 1 and {len(every)} (the devices visible); got {n}")
  return every[:n]


def make_mesh(devices: list[jax.Device]) -> Mesh:
  """A one-axis mesh over ``devices``, its axis named :data:`BATCH`.

  Example:
    >>> from jaxlstm.distributed import make_mesh
    >>> mesh = make_mesh(jax.devices()[:1])
    >>> mesh.axis_names, mesh.devices.size
    (('batch',), 1)
  """
  return Mesh(np.array(devices), (BATCH,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Splits axis 0 (the batch) across the mesh; every other axis, time included, stays whole.

  Example:
    >>> from jaxlstm.distributed import batch_sharding, make_mesh
    >>> batch_sharding(make_mesh(jax.devices()[:1])).spec
    P('batch',)
  """
  return NamedSharding(mesh, P(BATCH))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of the mesh, as params and optimizer state are kept.

  Example:
    >>> from jaxlstm.distributed import make_mesh, replicated
    >>> replicated(make_mesh(jax.devices()[:1])).spec
    P()
  """
  return NamedSharding(mesh, P())


def check_divisible(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
  """Raises ``ValueError``, naming ``name`` and a size that would do, unless the mesh's devices divide ``batch_size``.

  Example:
    >>> from jaxlstm.distributed import check_divisible, make_mesh
    >>> check_divisible(6, make_mesh(jax.devices()[:1]))  # any size splits over one device
  """
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(
      f"{name}={batch_size} must be divisible by the number of devices ({n}); "
      f"use a multiple of {n}, such as {max(n, batch_size // n * n)}"
    )


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a host batch (global on every process) onto the mesh, split along axis 0.

  Example:
    >>> from jaxlstm.distributed import make_mesh, shard_batch
    >>> batch = shard_batch({"xs": np.ones((4, 7, 3), np.float32)}, make_mesh(jax.devices()[:1]))
    >>> batch["xs"].shape, batch["xs"].sharding.spec
    ((4, 7, 3), P('batch',))
  """
  sharding = batch_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)

  def place(a):
    a = np.asarray(a)
    # Each process holds the global batch; give every local device its rows.
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

  return jax.tree_util.tree_map(place, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every array of ``tree`` on every device of the mesh, also across processes.

  Example:
    >>> from jaxlstm.distributed import make_mesh, replicate
    >>> params = replicate(jaxlstm.gru_init(jax.random.key(0), 3, 5), make_mesh(jax.devices()[:1]))
    >>> params.w_x.sharding.spec
    P()
  """
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree_util.tree_map(
    lambda a: jax.make_array_from_callback(np.shape(a), sharding, lambda idx: np.asarray(a)[idx]), tree
  )


def local_replica(tree: Any) -> Any:
  """``tree`` with every replicated array that spans several processes narrowed to this process's copy.

  It copies nothing, so it is cheap enough for every step; with one process
  it returns ``tree`` itself.

  Example:
    >>> params = jaxlstm.gru_init(jax.random.key(0), 3, 5)
    >>> jaxlstm.distributed.local_replica(params) is params  # one process
    True
  """
  if jax.process_count() == 1:  # then every array is fully addressable
    return tree

  def local(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      return a.addressable_data(0)
    return a

  return jax.tree_util.tree_map(local, tree)


def to_host(tree: Any) -> Any:
  """NumPy copies of (replicated) arrays, also when they span several processes.

  Example:
    >>> params = jaxlstm.distributed.to_host(jaxlstm.gru_init(jax.random.key(0), 3, 5))
    >>> type(params).__name__, type(params.w_x).__name__
    ('GRUParams', 'ndarray')
  """
  return jax.tree_util.tree_map(np.asarray, local_replica(tree))


def device_memory() -> dict[str, float]:
  """Peak bytes in use per local device, in MiB, where the backend reports it (GPU and TPU do).

  Returns:
    ``{"mem_mib_<device id>": MiB}``; empty where the backend reports nothing (CPU).

  Example:
    >>> memory = jaxlstm.distributed.device_memory()
    >>> all(name.startswith("mem_mib_") and mib >= 0 for name, mib in memory.items())
    True
  """
  out = {}
  for d in jax.local_devices():
    stats = d.memory_stats() if hasattr(d, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
      out[f"mem_mib_{d.id}"] = stats["peak_bytes_in_use"] / 2**20
  return out
