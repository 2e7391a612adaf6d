"""Any TFDS catalog dataset as `tfds:<name>`, read through `tfds.data_source` (array_record, no TensorFlow).

The whole split is read into memory once: for MNIST/CIFAR-sized data that is the fastest input path
on CPU (see shared notes). Larger sets (or any, by `data.streaming`) are streamed from their files
instead (`cnnlab.data.streaming`), from TFDS's records or, with `data.stream_from='prepared'`, from a
copy decoded once into memory-mapped arrays (`cnnlab.data.prepared`). A dataset neither prepared in `data_dir`
nor downloadable is one clear error sentence, never a traceback or a minutes-long retry loop.
"""

import contextlib
import os
import socket

from absl import logging

import numpy as np

from cnnlab.data import Dataset, holdout_split, prepared, streaming
from cnnlab.errors import UserError

_PROBE_HOST = "storage.googleapis.com"  # where TFDS fetches most sources and prepared data


def _online(timeout: float = 3.0) -> bool:
  """Whether TFDS's download host answers; without it TFDS retries for minutes before failing."""
  try:
    socket.create_connection((_PROBE_HOST, 443), timeout=timeout).close()
    return True
  except OSError:
    return False


def _read_split(source, image_key: str, label_key: str, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  parts = [streaming.to_arrays(source.__getitems__(list(range(lo, min(lo + chunk, len(source))))), image_key,
                               label_key) for lo in range(0, len(source), chunk)]
  return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


@contextlib.contextmanager
def _quiet():
  """Silences TFDS's absl warnings (e.g. 'Variant folder ... has no dataset_info.json' for absent data)."""
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(level)


def _sources(name: str, data_dir: str, download: bool):
  """(data sources by split, DatasetInfo) of TFDS dataset `name`, prepared first if needed and allowed."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = data_dir or None
  try:
    with _quiet():
      builder = tfds.builder(name, data_dir=data_dir)
      prepared = builder.is_prepared()
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(f"'{name}' is not in the TFDS catalog; see https://www.tensorflow.org/datasets/catalog") from None
  where = os.path.dirname(os.path.dirname(builder.data_dir))
  prepare_hint = (f"prepare it where there is network with `tfds build {name} --data_dir=DIR "
                  f"--file_format=array_record` and pass --config.data.data_dir=DIR")
  if not prepared:
    if not download:
      raise UserError(f"TFDS dataset '{name}' is not prepared in {where} and data.download is False; {prepare_hint}")
    if not _online():
      raise UserError(f"TFDS dataset '{name}' is not prepared in {where} and cannot be downloaded "
                      f"({_PROBE_HOST} is unreachable); {prepare_hint}")
    try:
      builder.download_and_prepare(file_format="array_record")
    except Exception as e:  # pylint: disable=broad-except
      raise UserError(f"TFDS dataset '{name}' could not be downloaded and prepared in {where} "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); {prepare_hint}") from None
  try:
    return builder.as_data_source(), builder.info
  except NotImplementedError:
    raise UserError(f"TFDS dataset '{name}' in {where} is prepared as tfrecord, which needs TensorFlow; "
                    f"re-prepare it with --file_format=array_record") from None


def _streamed(name: str, sources, data_dir: str, train: streaming.Records, num_classes: int,
              example_shape: tuple[int, ...], test_fraction: float, split_seed: int, workers: int,
              source: str) -> streaming.StreamedDataset:
  """The dataset read from its files as it trains: TFDS's records, or their prepared copy (`data.stream_from`)."""
  splits = {"train": train}
  if "test" in sources:
    splits["test"] = streaming.Records(sources["test"], train.image_key, train.label_key)
  if source == "prepared":
    splits = {s: prepared.open_or_prepare(r, prepared.folder(data_dir, s)) for s, r in splits.items()}
  if "test" in splits:
    tr, te = streaming.Split(splits["train"]), streaming.Split(splits["test"])
  else:
    train_ids, test_ids = streaming.holdout(len(train), test_fraction, split_seed)
    tr, te = streaming.Split(splits["train"], train_ids), streaming.Split(splits["train"], test_ids)
  return streaming.StreamedDataset(f"tfds:{name}", tr, te, num_classes, example_shape, workers)


def load(name: str, data_dir: str, download: bool, test_fraction: float, split_seed: int, mode: str = "memory",
         workers: int = 0, source: str = "records") -> Dataset | streaming.StreamedDataset:
  """TFDS dataset `name` (prepared in `data_dir`, or downloaded and prepared there if allowed), in memory or
  streamed by `mode` (`data.streaming`; 'auto' measures the training split as float32 from its first example),
  from TFDS's records or their prepared copy (`source`, `data.stream_from`)."""
  sources, info = _sources(name, data_dir, download)
  image_key, label_key = info.supervised_keys or ("image", "label")
  num_classes = info.features[label_key].num_classes
  train = streaming.Records(sources["train"], image_key, label_key)
  first = train.arrays(np.zeros(1, np.int64))[0]
  if streaming.choose(mode, len(train) * first.nbytes):
    return _streamed(name, sources, info.data_dir, train, num_classes, first.shape[1:], test_fraction, split_seed,
                     workers, source)
  x_tr, y_tr = _read_split(sources["train"], image_key, label_key)
  if "test" in sources:
    x_te, y_te = _read_split(sources["test"], image_key, label_key)
    return Dataset(f"tfds:{name}", x_tr, y_tr, x_te, y_te, num_classes)
  return holdout_split(f"tfds:{name}", x_tr, y_tr, test_fraction, split_seed, num_classes)
