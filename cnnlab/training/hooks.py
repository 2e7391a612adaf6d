"""Host code that `fit` runs between steps: record what the step metrics show, or stop training early."""

import dataclasses
from typing import Any, Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Hook:
  """`fn(step, state, metrics)`, called by `fit` after every `every`-th step and after the last.

  `metrics` holds one dict of host floats per step since the hook's previous call (after a resume: since its
  last call before the preemption). A true return value stops training after `step`: the run then ends, and
  is later restored, as a finished run of `step` steps. `state` is only valid during the call (the next step
  donates its buffers).
  """
  every: int
  fn: Callable[[int, Any, list[dict[str, float]]], bool | None]


def stop_at(metric: str, threshold: float, every: int) -> Hook:
  """Stops at the end of the first `every` steps in which the step metric `metric` reached <= `threshold`."""
  # Compared in float32, the precision the step computed it in.
  return Hook(every, lambda step, state, metrics: bool(
      np.min(np.asarray([m[metric] for m in metrics], np.float32)) <= threshold) if metrics else False)
