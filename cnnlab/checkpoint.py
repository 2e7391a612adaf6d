"""Checkpoints with orbax's CheckpointManager: periodic + final, keep the last few, resume the latest."""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores a train state under `directory` (one sub-folder per step)."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory), options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore_latest(self, state: Any) -> Any:
    """The latest saved state with `state`'s structure and shardings, or `state` if none is saved."""
    step = self.manager.latest_step()
    if step is None:
      return state
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def save(self, step: int, state: Any) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state))

  def close(self) -> None:
    """Waits for pending (async) saves to land, then releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()
