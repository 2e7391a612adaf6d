"""Data parallelism: one ("data",) mesh over every device; batches sharded, params replicated.

Seeded trainings (`seeds.fit_seeds`) use a ("seed", "data") mesh instead: the stacked per-seed state split over
"seed", each seed's batch over "data".

The same code runs on 1 CPU, 8 simulated CPU devices, a GPU or a TPU pod slice (call
`jax.distributed.initialize()` first on multi-host; each process then feeds its own rows).
"""

import itertools
import math
from typing import Iterator

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from cnnlab.errors import UserError


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins a multi-process run through JAX's own runtime (`jax.distributed.initialize`).

  With no arguments JAX detects the cluster (Cloud TPU, SLURM, Open MPI). CPU processes talk
  through gloo collectives, which this selects (it does not affect GPU or TPU).
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)


def is_chief() -> bool:
  """Process 0 writes the files shared by all processes (metrics, results, figures)."""
  return jax.process_index() == 0


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named "data" over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  # Auto axis types keep the classic "jit propagates shardings" behaviour (make_mesh defaults to Explicit).
  return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def make_seed_mesh(seeds: int, seed_devices: int = 1, devices=None) -> Mesh:
  """A ("seed", "data") mesh: gcd(seeds, seed_devices) devices along "seed", the rest of `devices` along "data"."""
  devices = jax.devices() if devices is None else list(devices)
  if seed_devices < 1 or len(devices) % seed_devices:
    raise UserError(f"train.seed_devices must divide the {len(devices)} devices, got {seed_devices}")
  # A group smaller than seed_devices (or not a multiple of it) still runs: each seed shard must be whole.
  k = math.gcd(seeds, seed_devices)
  return jax.make_mesh((k, len(devices) // k), ("seed", "data"), axis_types=(AxisType.Auto,) * 2, devices=devices)


def seed_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (seed) dimension split over the "seed" axis, replicated over "data"."""
  return NamedSharding(mesh, P("seed"))


def seed_data_sharding(mesh: Mesh) -> NamedSharding:
  """(seed, batch, ...) arrays: seeds over "seed", each seed's batch over "data"."""
  return NamedSharding(mesh, P("seed", "data"))


def data_size(mesh: Mesh) -> int:
  """Devices a batch is split over: the "data" axis."""
  return mesh.shape["data"]


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the "data" axis."""
  return NamedSharding(mesh, P("data"))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  if batch_size % data_size(mesh):
    raise UserError(f"batch size {batch_size} is not divisible by the {data_size(mesh)} devices of the mesh's "
                    "data axis")


def process_rows(global_batch_size: int) -> slice:
  """The rows of a global batch that this process feeds (all of them with one process)."""
  local = global_batch_size // jax.process_count()
  return slice(jax.process_index() * local, (jax.process_index() + 1) * local)


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles global arrays, sharded over "data", from this process's rows."""
  sharding = data_sharding(mesh)
  if jax.process_count() == 1:  # one device_put of the whole batch: ~3x less host overhead per step
    return jax.device_put(local_batch, sharding)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def device_batches(batches: Iterator[dict[str, np.ndarray]], mesh: Mesh, chunk: int = 8,
                   sharding: NamedSharding | None = None) -> Iterator[dict[str, jax.Array]]:
  """`batches` (this process's rows) sharded over "data", transferred `chunk` batches per host-to-device call.

  One `device_put` of 8 batches served ~1.7x the images/s of one call per batch here (the call's fixed cost
  dominates for MNIST-sized batches). Batches are taken from `batches` only as needed, `chunk` ahead at most.
  `sharding` (single process only) overrides the batch sharding, e.g. `seed_data_sharding` for stacked batches.
  """
  sharding = sharding or data_sharding(mesh)
  while True:
    group = list(itertools.islice(batches, chunk))
    if not group:
      return
    if jax.process_count() == 1:
      yield from jax.device_put(group, sharding)
    else:
      yield from (shard_batch(b, mesh) for b in group)


def needs_blocking(mesh: Mesh) -> bool:
  """Several CPU devices can deadlock in all-reduce when steps are dispatched without blocking."""
  return mesh.size > 1 and mesh.devices.flat[0].platform == "cpu"
