"""In-memory input pipeline: the batch of step t is a pure function of (seed, t).

That makes resumption exact (no iterator state to checkpoint) and multi-host simple (each
process gathers only its own rows). For datasets that fit in memory, numpy indexing is far
faster than the train step consumes (see benchmarks), so no loader library is needed here;
`cnnlab.data.streaming` reads the same rows from disk for sets that do not fit.
"""

from typing import Iterator

import numpy as np

from cnnlab.errors import UserError


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def check_size(n: int, batch_size: int) -> None:
  if n < batch_size:
    raise UserError(f"the training set has {n} examples, fewer than the batch size {batch_size}")


def position(n: int, batch_size: int, step: int) -> tuple[int, int]:
  """(epoch, batch index in that epoch) of step `step`: each epoch has n // batch_size batches."""
  return divmod(step, n // batch_size)


def step_positions(n: int, batch_size: int, seed: int, start_step: int = 0) -> Iterator[tuple[np.ndarray, int]]:
  """For each step from `start_step` on, forever: its epoch's permutation (one array per epoch) and its batch
  index in that epoch; each epoch drops its incomplete tail."""
  check_size(n, batch_size)
  epoch, i = position(n, batch_size, start_step)
  while True:
    perm = epoch_permutation(n, seed, epoch)
    for j in range(i, n // batch_size):
      yield perm, j
    epoch, i = epoch + 1, 0


def train_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, start_step: int = 0,
                  rows: slice = slice(None)) -> Iterator[dict[str, np.ndarray]]:
  """Yields shuffled batches from `start_step` on, forever; each epoch drops its incomplete tail.

  `rows` selects this process's part of each global batch (see `parallel.process_rows`).
  """
  for perm, i in step_positions(len(x), batch_size, seed, start_step):
    idx = perm[i * batch_size:(i + 1) * batch_size][rows]
    yield {"x": x[idx], "y": y[idx]}


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int,
                 rows: slice = slice(None)) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-size batches covering every example once; the last is zero-padded with mask 0."""
  for lo in range(0, len(x), batch_size):
    xb, yb = x[lo:lo + batch_size], y[lo:lo + batch_size]
    pad = batch_size - len(xb)
    mask = np.concatenate([np.ones(len(xb), np.float32), np.zeros(pad, np.float32)])
    if pad:
      xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
      yb = np.concatenate([yb, np.zeros((pad, *yb.shape[1:]), yb.dtype)])  # per-pixel or box labels too
    yield {"x": xb[rows], "y": yb[rows], "mask": mask[rows]}
