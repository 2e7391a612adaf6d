"""A streamed split decoded once into memory-mapped arrays on disk, then read at memory speed.

TFDS stores one `tf.train.Example` per record (MNIST's images PNG-encoded), and parsing and decoding one in Python
costs tens to hundreds of microseconds: a few thousand examples/s, far below what a small net's train step consumes
(docs/performance.md). With `data.stream_from='prepared'` each streamed split is decoded once, in chunks
(never whole in memory), into `<dir>/x.npy` (the images as stored, e.g. uint8: N x H x W x C bytes on disk) and
`<dir>/y.npy`. Training then gathers a batch's rows from the memory-mapped files (the page cache keeps what fits)
and scales them exactly as the records path does, so batches and numbers are the same bit for bit.

The files are written into a temporary folder renamed into place when complete, so an interrupted preparation is
never read, and processes that share the disk (a multi-host run) take turns under a lock file: one prepares, the
others read its copy.
"""

import fcntl
import json
import os
import shutil
import uuid

import numpy as np
from absl import logging

from cnnlab.data import streaming

_META = "meta.json"
_CHUNK = 4096  # records decoded at a time while preparing


class Arrays:
  """A prepared split: `len`, and `arrays(ids)` as `streaming.Records.arrays` gives them.

  Opens its files lazily and pickles as its folder only, so grain's worker processes open their own maps.
  """

  def __init__(self, directory: str):
    self.directory = directory
    with open(os.path.join(directory, _META)) as f:
      self.n = json.load(f)["n"]
    self._maps = None

  def __len__(self) -> int:
    return self.n

  def __getstate__(self) -> dict:
    return {"directory": self.directory, "n": self.n, "_maps": None}

  def decoded(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if self._maps is None:
      self._maps = tuple(np.load(os.path.join(self.directory, f), mmap_mode="r") for f in ("x.npy", "y.npy"))
    x, y = self._maps
    ids = np.asarray(ids, np.int64)
    return x[ids], y[ids]

  def arrays(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return streaming.as_dataset_arrays(*self.decoded(ids))


def _complete(directory: str, n: int) -> bool:
  try:
    with open(os.path.join(directory, _META)) as f:
      return json.load(f)["n"] == n
  except (OSError, ValueError, KeyError):
    return False


def prepare(records: streaming.Records, directory: str) -> None:
  """Decodes every record of `records` into `directory` (x.npy, y.npy, meta.json), `_CHUNK` records at a time."""
  n = len(records)
  tmp = f"{directory}.tmp-{uuid.uuid4().hex[:8]}"
  os.makedirs(tmp)
  try:
    x0, y0 = records.decoded(np.zeros(1, np.int64))
    x = np.lib.format.open_memmap(os.path.join(tmp, "x.npy"), "w+", x0.dtype, (n, *x0.shape[1:]))
    y = np.lib.format.open_memmap(os.path.join(tmp, "y.npy"), "w+", y0.dtype, (n, *y0.shape[1:]))
    for lo in range(0, n, _CHUNK):
      x[lo:lo + _CHUNK], y[lo:lo + _CHUNK] = records.decoded(np.arange(lo, min(lo + _CHUNK, n)))
    x.flush()
    y.flush()
    del x, y
    with open(os.path.join(tmp, _META), "w") as f:
      json.dump({"n": n, "image_key": records.image_key, "label_key": records.label_key}, f)
    if os.path.isdir(directory):  # an outdated or damaged copy
      shutil.rmtree(directory)
    os.replace(tmp, directory)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def open_or_prepare(records: streaming.Records, directory: str) -> Arrays:
  """`records` as `Arrays` from `directory`, decoding them there first unless a complete copy of all is there.

  Processes sharing the disk take turns (a lock file beside `directory`): one prepares, the others then find its
  copy complete.
  """
  os.makedirs(os.path.dirname(directory) or ".", exist_ok=True)
  with open(f"{directory}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not _complete(directory, len(records)):
      logging.info("preparing %d records in %s (data.stream_from='prepared'; once per split)", len(records),
                   directory)
      prepare(records, directory)
  return Arrays(directory)


def folder(data_dir: str, split: str) -> str:
  """Where a TFDS dataset's prepared `split` goes: beside its files (`DatasetInfo.data_dir`), versioned with them."""
  return os.path.join(data_dir, "cnnlab_prepared", split)
