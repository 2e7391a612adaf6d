"""Datasets read from their files while training, for sets too large for memory (`data.streaming`).

A `StreamedDataset` reads a split by example ids through a grain pipeline: one grain element per few steps' batches,
read and scaled to float32 in `data.stream_workers` worker processes (0: in the training process, with a reader
thread prefetching ahead). A split's source is either TFDS's records (`Records`: `tfds.data_source`, array_record,
random access, each example decoded as it is read: PNG for MNIST) or, with `data.stream_from='prepared'`, the same
split decoded once into memory-mapped arrays (`cnnlab.data.prepared`: reads at memory speed). Its batches are the
in-memory pipeline's: the batch of step t holds the rows `input_pipeline.train_batches` would gather from the same
set in memory, a pure function of (seed, t); so a resumed run reads exactly what an uninterrupted one would, and
each process of a multi-process run reads only its rows of each global batch (`parallel.process_rows`). Within an
epoch those rows are disjoint between processes and together cover the global batches; sharding by rows of the
global batch rather than by file keeps a run's numbers independent of its process count. Evaluation batches are
padded and masked like `input_pipeline.eval_batches`.

Only the shuffling indices (8 bytes per example) are held in memory, never the examples.
"""

import dataclasses
import itertools
import sys
from typing import Any, Iterator

import numpy as np

from cnnlab.errors import UserError
from cnnlab.training import input_pipeline

MODES = ("auto", "memory", "stream")
SOURCES = ("records", "prepared")  # data.stream_from
# 'auto' streams a training set larger than this as float32 arrays: up to it the set is loaded, and `fit` keeps
# it on the device (`device_data.MAX_BYTES` is the same size).
MEMORY_BYTES = 1 << 30
_THREADS = 1     # reader threads per process (the training process with 0 workers, else each worker)
_PREFETCH = 8    # grain elements each reader thread and each worker keeps ready ahead of the consumer
# A grain element holds the batches of up to _MAX_STEPS steps, read at once, as long as they stay under
# _ELEMENT_BYTES: grain's fixed cost per element exceeds the read of a prepared MNIST batch of 64 (measured in
# docs/performance.md, "Prepared copies").
_MAX_STEPS = 8
_ELEMENT_BYTES = 8 << 20


def check(mode: str, workers: int, source: str = "records") -> None:
  """One-line `UserError`s for a bad `data.streaming`, `data.stream_workers` or `data.stream_from`."""
  if mode not in MODES:
    raise UserError(f"data.streaming must be one of {MODES}, got {mode!r}")
  if not isinstance(workers, int) or workers < 0:
    raise UserError(f"data.stream_workers must be an integer >= 0, got {workers!r}")
  if source not in SOURCES:
    raise UserError(f"data.stream_from must be one of {SOURCES}, got {source!r}")


def choose(mode: str, nbytes: int) -> bool:
  """Whether to stream a training set that takes `nbytes` in memory (as float32), under `data.streaming=mode`."""
  check(mode, 0)
  return mode == "stream" or (mode == "auto" and nbytes > MEMORY_BYTES)


def as_dataset_arrays(x: np.ndarray, y: Any) -> tuple[np.ndarray, np.ndarray]:
  """Decoded images and labels as `Dataset` holds them: x float32 (k, *spatial, C), integer images scaled to
  [0, 1]; y int32."""
  if np.issubdtype(x.dtype, np.integer):
    # x.astype(np.float32) / 255.0 to the bit, in one pass: ~15x faster on a prepared MNIST read
    x = np.divide(x, np.float32(255.0), dtype=np.float32)
  if x.ndim == 3:  # (k, H, W) -> (k, H, W, 1)
    x = x[..., None]
  return x.astype(np.float32, copy=False), np.asarray(y, np.int32)


def to_arrays(records: list[dict], image_key: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
  """Records as `Dataset` holds them (`as_dataset_arrays`)."""
  return as_dataset_arrays(np.stack([r[image_key] for r in records]), [r[label_key] for r in records])


@dataclasses.dataclass(frozen=True, eq=False)
class Records:
  """A split's records (`tfds.data_source`: random access to example dicts), each decoded as it is read."""
  source: Any  # len(source), and source.__getitems__(record ids) -> records (dicts)
  image_key: str
  label_key: str

  def __len__(self) -> int:
    return len(self.source)

  def decoded(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Records `ids` decoded, as stored: images (k, ...) in their dtype (e.g. uint8), labels (k,)."""
    records = self.source.__getitems__([int(i) for i in ids])
    return np.stack([r[self.image_key] for r in records]), np.asarray([r[self.label_key] for r in records])

  def arrays(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return as_dataset_arrays(*self.decoded(ids))


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """One split, read by example: example i is example `index[i]` of `source` (example i when `index` is None)."""
  source: Any  # `Records` or `prepared.Arrays`: len(source), source.arrays(ids) -> (x float32, y int32)
  index: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.source) if self.index is None else len(self.index)

  def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Examples `rows` (at least one) as {"x": float32 (k, ...), "y": int32 (k, ...)}."""
    x, y = self.source.arrays(rows if self.index is None else self.index[rows])
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


class _TrainBatches:
  """grain map, k -> this process's rows of the global batches of steps [k * steps, (k + 1) * steps), read at
  once (the in-memory pipeline's rows)."""

  def __init__(self, split: Split, batch_size: int, seed: int, rows: slice, steps: int):
    self.split, self.batch_size, self.seed, self.rows, self.steps = split, batch_size, seed, rows, steps
    self._epoch = (None, None)  # (epoch, its permutation), replaced whole so reader threads never see a mix

  def _rows(self, step: int) -> np.ndarray:
    n, b = len(self.split), self.batch_size
    epoch, i = input_pipeline.position(n, b, step)
    cached = self._epoch
    if cached[0] != epoch:
      cached = self._epoch = (epoch, input_pipeline.epoch_permutation(n, self.seed, epoch))
    return cached[1][i * b:(i + 1) * b][self.rows]

  def __call__(self, k: int) -> list[dict[str, np.ndarray]]:
    rows = [self._rows(step) for step in range(k * self.steps, (k + 1) * self.steps)]
    read = self.split.read(np.concatenate(rows))
    bounds = np.cumsum([len(r) for r in rows])[:-1]
    return [dict(zip(read, parts)) for parts in zip(*(np.split(v, bounds) for v in read.values()))]


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
    batch_bytes = batch_size * 4 * int(np.prod(self.example_shape))
    steps = max(1, min(_MAX_STEPS, _ELEMENT_BYTES // batch_bytes))
    first, skip = divmod(start_step, steps)
    elements = grain.MapDataset.range(first, sys.maxsize // steps).map(
        _TrainBatches(self.train, batch_size, seed, rows, steps))
    batches = (b for group in _iterate(elements, self.workers) for b in group)
    return itertools.islice(batches, skip, None)

  def eval_batches(self, split: str, batch_size: int, rows: slice = slice(None)) -> Iterator[dict[str, np.ndarray]]:
    """This process's `rows` of fixed-size batches covering every example of `split` ('train' | 'test') once."""
    import grain  # pylint: disable=g-import-not-at-top
    data = {"train": self.train, "test": self.test}[split]
    batches = grain.MapDataset.range(-(-len(data) // batch_size))
    return _iterate(batches.map(_EvalBatch(data, batch_size, rows)), self.workers)
