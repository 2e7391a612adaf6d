"""A trained TrainState applied to a whole array in fixed-size batches (one compile per model and shape)."""

import functools
from typing import Callable

import jax
import numpy as np


@functools.lru_cache(maxsize=64)
def _jitted_apply(apply_fn: Callable) -> Callable:
  # Keyed on apply_fn: train.fit hands every equal model the same bound apply, so seeds share a compile.
  return jax.jit(lambda variables, x: apply_fn(variables, x, train=False))


def outputs(state, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """The model's outputs (eval mode) for every example of `x`; the last batch is zero-padded, then cut."""
  variables = {"params": state.params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  fn = _jitted_apply(state.apply_fn)
  out = []
  for i in range(0, len(x), batch_size):
    chunk = x[i:i + batch_size]
    n = len(chunk)
    if n < batch_size:  # keep one input shape: no recompile for the last batch
      chunk = np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]), chunk.dtype)])
    out.append(np.asarray(fn(variables, chunk))[:n])
  return np.concatenate(out)


def predict(state, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """Predicted classes (argmax of the last axis: per example, or per pixel for a segmentation net)."""
  return np.argmax(outputs(state, x, batch_size), axis=-1)


def test_correct(state, dataset) -> dict:
  """A `sweep.Trial.after_fit`: which test examples the trained model gets right, packed for results.json.

  Judges pair two arms' outcomes example by example (`report.stats.paired_accuracy`).
  """
  from cnnlab.report import stats  # pylint: disable=g-import-not-at-top
  return {"test_correct": stats.pack_correct(predict(state, dataset.x_test) == dataset.y_test)}
