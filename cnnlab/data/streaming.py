"""Datasets read from their files while training, for sets too large for memory (`data.streaming`).

A `StreamedDataset` reads a split record by record (`tfds.data_source`: array_record, random access) through a
grain pipeline: one grain element per batch, decoded and scaled to float32 in `data.stream_workers` worker
processes (0: in the training process, with a reader thread prefetching ahead). Its batches are the in-memory
pipeline's: the batch of step t holds the rows `input_pipeline.train_batches` would gather from the same set in
memory, a pure function of (seed, t); so a resumed run reads exactly what an uninterrupted one would, and each
process of a multi-process run reads only its rows of each global batch (`parallel.process_rows`). Within an
epoch those rows are disjoint between processes and together cover the global batches; sharding by rows of the
global batch rather than by file keeps a run's numbers independent of its process count. Evaluation batches are
padded and masked like `input_pipeline.eval_batches`.

Only the shuffling indices (8 bytes per example) are held in memory, never the examples.
"""

import dataclasses
import sys
from typing import Any, Iterator

import numpy as np

from cnnlab.errors import UserError
from cnnlab.training import input_pipeline

MODES = ("auto", "memory", "stream")
# 'auto' streams a training set larger than this as float32 arrays: up to it the set is loaded, and `fit` keeps
# it on the device (`device_data.MAX_BYTES` is the same size).
MEMORY_BYTES = 1 << 30
_THREADS = 1     # reader threads per process (the training process with 0 workers, else each worker)
_PREFETCH = 8    # batches each reader thread and each worker keeps ready ahead of the consumer


def check(mode: str, workers: int) -> None:
  """One-line `UserError`s for a bad `data.streaming` or `data.stream_workers`."""
  if mode not in MODES:
    raise UserError(f"data.streaming must be one of {MODES}, got {mode!r}")
  if not isinstance(workers, int) or workers < 0:
    raise UserError(f"data.stream_workers must be an integer >= 0, got {workers!r}")


def choose(mode: str, nbytes: int) -> bool:
  """Whether to stream a training set that takes `nbytes` in memory (as float32), under `data.streaming=mode`."""
  check(mode, 0)
  return mode == "stream" or (mode == "auto" and nbytes > MEMORY_BYTES)


def to_arrays(records: list[dict], image_key: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
  """Records as `Dataset` holds them: x float32 (k, *spatial, C), integer images scaled to [0, 1]; y int32."""
  x = np.stack([r[image_key] for r in records])
  if np.issubdtype(x.dtype, np.integer):
    x = x.astype(np.float32) / 255.0
  if x.ndim == 3:  # (k, H, W) -> (k, H, W, 1)
    x = x[..., None]
  return x.astype(np.float32, copy=False), np.asarray([r[label_key] for r in records], np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """One split, read by example: example i is record `index[i]` of `source` (record i when `index` is None)."""
  source: Any  # random access: len(source), and source.__getitems__(record ids) -> records (dicts)
  image_key: str
  label_key: str
  index: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.source) if self.index is None else len(self.index)

  def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Examples `rows` (at least one) as {"x": float32 (k, ...), "y": int32 (k, ...)}."""
    ids = rows if self.index is None else self.index[rows]
    x, y = to_arrays(self.source.__getitems__([int(i) for i in ids]), self.image_key, self.label_key)
    return {"x": x, "y": y}


def holdout(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) example ids of a seeded random split, for sets that ship without a test split.

  Not stratified as `data.holdout_split` is: that needs every label, i.e. decoding the whole set.
  """
  if not 0.0 < test_fraction < 1.0:
    raise UserError(f"data.test_fraction must be in (0, 1), got {test_fraction}")
  perm = np.random.default_rng(seed).permutation(n)
  k = int(round(test_fraction * n))
  return np.sort(perm[k:]), np.sort(perm[:k])


class _TrainBatch:
  """grain map, step -> this process's rows of the step's global batch (the in-memory pipeline's rows)."""

  def __init__(self, split: Split, batch_size: int, seed: int, rows: slice):
    self.split, self.batch_size, self.seed, self.rows = split, batch_size, seed, rows
    self._epoch = (None, None)  # (epoch, its permutation), replaced whole so reader threads never see a mix

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    n, b = len(self.split), self.batch_size
    epoch, i = input_pipeline.position(n, b, step)
    cached = self._epoch
    if cached[0] != epoch:
      cached = self._epoch = (epoch, input_pipeline.epoch_permutation(n, self.seed, epoch))
    return self.split.read(cached[1][i * b:(i + 1) * b][self.rows])


class _EvalBatch:
  """grain map, k -> this process's rows of evaluation batch k: examples [k*B, (k+1)*B), zero-padded, masked."""

  def __init__(self, split: Split, batch_size: int, rows: slice):
    self.split, self.batch_size, self.rows = split, batch_size, rows

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    pos = np.arange(k * self.batch_size, (k + 1) * self.batch_size)[self.rows]
    real = pos[pos < len(self.split)]
    batch = self.split.read(real if len(real) else np.zeros(1, np.int64))  # all padding: shapes from example 0
    pad = len(pos) - len(real)
    out = {key: np.concatenate([v[:len(real)], np.zeros((pad, *v.shape[1:]), v.dtype)]) for key, v in batch.items()}
    return {**out, "mask": (pos < len(self.split)).astype(np.float32)}


def _allow_worker_processes() -> None:
  """grain's worker processes read absl flags, which only an absl entry point (`run.py`) parses; elsewhere
  (tests, notebooks) their defaults are taken as parsed."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _iterate(elements, workers: int) -> Iterator[dict[str, np.ndarray]]:
  """The grain MapDataset `elements` in order, computed `_PREFETCH` ahead by a reader thread or `workers`."""
  import grain  # pylint: disable=g-import-not-at-top  (slow to import: only streamed runs pay for it)
  ds = elements.to_iter_dataset(grain.ReadOptions(num_threads=_THREADS, prefetch_buffer_size=_PREFETCH))
  if workers:
    _allow_worker_processes()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=_PREFETCH))
  return iter(ds)


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedDataset:
  """A dataset read from its files as it trains; `fit` takes it where it takes a `Dataset`.

  x float32 (N, *spatial, C), y int32 as in `Dataset`, but no arrays: `train_batches` and `eval_batches` yield
  what `input_pipeline.train_batches` / `eval_batches` yield for the same examples in memory.
  """
  name: str
  train: Split
  test: Split
  num_classes: int
  example_shape: tuple[int, ...]
  workers: int = 0  # grain worker processes decoding batches; 0: the training process (one reader thread)

  @property
  def n_train(self) -> int:
    return len(self.train)

  @property
  def n_test(self) -> int:
    return len(self.test)

  def train_batches(self, batch_size: int, seed: int, start_step: int = 0,
                    rows: slice = slice(None)) -> Iterator[dict[str, np.ndarray]]:
    """This process's `rows` of each step's shuffled global batch, from `start_step` on, forever."""
    import grain  # pylint: disable=g-import-not-at-top
    input_pipeline.check_size(self.n_train, batch_size)
    steps = grain.MapDataset.range(start_step, sys.maxsize)
    return _iterate(steps.map(_TrainBatch(self.train, batch_size, seed, rows)), self.workers)

  def eval_batches(self, split: str, batch_size: int, rows: slice = slice(None)) -> Iterator[dict[str, np.ndarray]]:
    """This process's `rows` of fixed-size batches covering every example of `split` ('train' | 'test') once."""
    import grain  # pylint: disable=g-import-not-at-top
    data = {"train": self.train, "test": self.test}[split]
    batches = grain.MapDataset.range(-(-len(data) // batch_size))
    return _iterate(batches.map(_EvalBatch(data, batch_size, rows)), self.workers)
