"""Checkpoints with orbax's CheckpointManager: periodic + final, keep the last few, resume the latest good one.

Each checkpoint stores the train state and a fingerprint of it (per-leaf sums). On restore the
fingerprint is recomputed, so a truncated or bit-flipped checkpoint is detected rather than
trained on: it is moved aside with a one-line warning and the previous one is used.
"""

import os
import shutil
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def fingerprint(state: Any) -> list[float]:
  """Per-leaf sum and sum of squares of a pytree's arrays, in float64 on the host.

  On the host: eager device reductions compiled once per leaf shape (~1.7 s per process for three small
  models) and cost ~0.3 s per save; the state is copied to the host to be saved anyway.
  """
  out = []
  for leaf in jax.device_get(jax.tree.leaves(state)):
    x = np.asarray(leaf, np.float64)
    out += [float(np.sum(x)), float(np.sum(np.square(x)))]
  return out


class Checkpointer:
  """Saves and restores a train state under `directory` (one sub-folder per step)."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def restore_latest(self, state: Any) -> Any:
    """The newest intact saved state with `state`'s structure and shardings, or `state` if there is none."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      out = self.restore(step, state)
      if out is not None:
        return out
    return state

  def restore(self, step: int, state: Any) -> Any | None:
    """The state saved at `step` with `state`'s structure and shardings (arrays or their shapes), or None if that
    checkpoint is unreadable (it is then moved aside)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      if not np.allclose(fingerprint(out.state), out.meta["fingerprint"], rtol=1e-5, atol=1e-6):
        raise ValueError("contents do not match the fingerprint saved with them")
      return out.state
    except Exception as e:  # pylint: disable=broad-except  (any unreadable checkpoint is skipped)
      self._quarantine(step, f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
    return None

  def _quarantine(self, step: int, why: str) -> None:
    src = os.path.join(self.directory, str(step))
    dst = os.path.join(os.path.dirname(self.directory), f"corrupt_checkpoint_{step}")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.move(src, dst)
    self.manager.reload()
    print(f"warning: checkpoint {step} in {self.directory} is unreadable ({why}); moved to {dst}, "
          "using the previous one", file=sys.stderr)

  def save(self, step: int, state: Any) -> None:
    if self.manager.latest_step() == step:
      return
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({"fingerprint": fingerprint(state)})))

  def close(self) -> None:
    """Waits for pending (async) saves to land, then releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()
