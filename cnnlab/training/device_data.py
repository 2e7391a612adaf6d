"""The training set kept on the device(s), each step gathering its batch there.

The same batches as `input_pipeline.train_batches` (the same epoch permutations, uploaded once per epoch),
so the same numbers, without a host gather and a host-to-device copy per step. On 2 CPU cores those cost
~0.2 ms per batch of 64 MNIST images (host gather ~0.06 ms, `device_put` the rest) but were already hidden
behind the step by asynchronous dispatch (`weight_sharing`'s wall time did not move); what this buys here is
a data path that alone serves 14-19x what the fastest step consumes (the host pipeline: 6-10x), and on an
accelerator no per-step host-to-device copy at all. The gather runs inside the jitted train step
(`steps.compiled_gather_step`): no extra dispatch. Used by `train.fit` for single-process runs on a training
set of up to `MAX_BYTES`; multi-process runs (each process feeding its own rows) and larger sets keep the
host pipeline.
"""

from typing import Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from cnnlab.training import input_pipeline, parallel

MAX_BYTES = 1 << 30  # a replicated copy per device: 1 GiB each at most


def fits(x: np.ndarray, y: np.ndarray, enabled: bool = True) -> bool:
  """Whether `fit` keeps this training set on the device(s)."""
  return enabled and jax.process_count() == 1 and x.nbytes + y.nbytes <= MAX_BYTES


def put(x: np.ndarray, y: np.ndarray, mesh: Mesh) -> dict[str, jax.Array]:
  """The whole training set, replicated on every device of `mesh`."""
  return jax.device_put({"x": x, "y": y}, parallel.replicated(mesh))


def epoch_permutations(n: int, batch_size: int, seed: int, mesh: Mesh, start_step: int = 0) -> Iterator[jax.Array]:
  """For each step from `start_step` on, its epoch's permutation on the device(s) (the same array all epoch)."""
  host = on_device = None
  for perm, _ in input_pipeline.step_positions(n, batch_size, seed, start_step):
    if perm is not host:  # a new epoch
      host, on_device = perm, jax.device_put(perm.astype(np.int32), parallel.replicated(mesh))
    yield on_device


def gather(data: dict[str, jax.Array], perm: jax.Array, step: jax.Array, batch_size: int) -> dict[str, jax.Array]:
  """Batch `step` of its epoch: rows perm[i * batch_size:(i + 1) * batch_size], i = step mod batches per epoch."""
  i = step % (perm.shape[0] // batch_size)
  idx = jax.lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)
  return {k: v.at[idx].get(mode="promise_in_bounds") for k, v in data.items()}


def seed_epoch_permutations(n: int, batch_size: int, seeds: tuple[int, ...], sharding, start_step: int = 0
                            ) -> Iterator[jax.Array]:
  """`epoch_permutations` of each seed, stacked (S, n): seed i's row is what a single-seed run of seeds[i] uses."""
  positions = [input_pipeline.step_positions(n, batch_size, s, start_step) for s in seeds]
  host = on_device = None
  for step in zip(*positions):
    if step[0][0] is not host:  # equal n and batch size: every seed starts a new epoch at the same step
      host = step[0][0]
      on_device = jax.device_put(np.stack([perm for perm, _ in step]).astype(np.int32), sharding)
    yield on_device
