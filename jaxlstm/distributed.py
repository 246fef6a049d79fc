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


def maybe_initialize(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> bool:
  """Calls ``jax.distributed.initialize`` when a multi-host run is configured.

  It is configured by the arguments, or by the standard environment
  variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID`` (cluster launchers such as SLURM are detected by JAX
  itself when only ``JAX_COORDINATOR_ADDRESS`` is missing and the launcher's
  variables are set). Returns whether it initialized.
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
  """``None``: no mesh; ``"all"``: every device of every process; ``n``: the first ``n``."""
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
  return Mesh(np.array(devices), (BATCH,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Splits axis 0 (the batch) across the mesh; every other axis, time included, stays whole."""
  return NamedSharding(mesh, P(BATCH))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_divisible(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"{name}={batch_size} must be divisible by the number of devices ({n}); "
                     f"use a multiple of {n}, such as {max(n, batch_size // n * n)}")


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a host batch (global on every process) onto the mesh, split along axis 0."""
  sharding = batch_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)

  def place(a):
    a = np.asarray(a)
    # Each process holds the global batch; give every local device its rows.
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

  return jax.tree_util.tree_map(place, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree_util.tree_map(
      lambda a: jax.make_array_from_callback(np.shape(a), sharding, lambda idx: np.asarray(a)[idx]), tree)


def local_replica(tree: Any) -> Any:
  """``tree`` with every replicated array that spans several processes narrowed to this process's copy.

  It copies nothing, so it is cheap enough for every step; with one process
  it returns ``tree`` itself.
  """
  if jax.process_count() == 1:  # then every array is fully addressable
    return tree

  def local(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      return a.addressable_data(0)
    return a
  return jax.tree_util.tree_map(local, tree)


def to_host(tree: Any) -> Any:
  """NumPy copies of (replicated) arrays, also when they span several processes."""
  return jax.tree_util.tree_map(np.asarray, local_replica(tree))


def device_memory() -> dict[str, float]:
  """Peak bytes in use per local device, in MiB, where the backend reports it (GPU and TPU do)."""
  out = {}
  for d in jax.local_devices():
    stats = d.memory_stats() if hasattr(d, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
      out[f"mem_mib_{d.id}"] = stats["peak_bytes_in_use"] / 2**20
  return out
