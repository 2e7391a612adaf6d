"""Datasets: a registry of real, offline data sets, plus any TFDS catalog name as `tfds:<name>`.

Every dataset is a `Dataset` of in-memory numpy arrays: images (N, H, W, C) or signals (N, L, C),
float32, and int32 labels; a TFDS set too large for memory is a `streaming.StreamedDataset` instead,
read from its files while training (`data.streaming`). Adding a dataset is one new file in this package:

    from cnnlab.data import Dataset, register
    @register("my_data")
    def load_my_data(config) -> Dataset: ...
"""

import dataclasses
import functools

import ml_collections
import numpy as np
from sklearn.model_selection import train_test_split

from cnnlab.data import streaming
from cnnlab.errors import UserError
from cnnlab.registry import Registry, import_submodules

DATASETS: Registry = Registry("dataset")
register = DATASETS.register


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train/test arrays: x (N, *spatial, C) float32; int32 targets y: labels (N,) or per-pixel labels (N, *spatial),
  or for single-object detection (N, 1 + 2 * len(spatial)): the class, then a box (see cnnlab.metrics.boxes)."""
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int

  def __post_init__(self):
    for split in ("train", "test"):
      x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
      if x.ndim < 3 or x.dtype != np.float32:
        raise UserError(f"dataset {self.name!r}: x_{split} must be float32 (N, *spatial, C), got {x.dtype} {x.shape}")
      n, spatial = x.shape[0], x.shape[1:-1]
      box = (1 + 2 * len(spatial),)
      if y.shape[:1] != (n,) or y.shape[1:] not in ((), spatial, box) or y.dtype != np.int32:
        raise UserError(f"dataset {self.name!r}: y_{split} must be int32 ({n},), ({n}, *{spatial}) or ({n}, {box[0]}) "
                        f"(class + box), got {y.dtype} {y.shape}")
      if not np.isfinite(x).all():
        raise UserError(f"dataset {self.name!r}: x_{split} holds NaN or inf values")
      labels = y[:, 0] if y.shape[1:] == box != spatial else y
      if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
        raise UserError(f"dataset {self.name!r}: y_{split} labels must be in [0, {self.num_classes}), "
                        f"got [{labels.min()}, {labels.max()}]")

  @property
  def example_shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])


def get_config() -> ml_collections.ConfigDict:
  """Data fields shared by every experiment that trains."""
  c = ml_collections.ConfigDict()
  c.name = "mnist5k"         # registered dataset (see `cnnlab.data.DATASETS`) or 'tfds:<catalog name>'
  c.data_dir = ""            # TFDS data_dir; '' means TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR)
  c.download = True          # TFDS only: try to download and prepare a dataset that is not in data_dir
  c.test_fraction = 0.2      # held-out fraction for datasets that ship without a test split (stratified; random
                             # when streamed, see streaming.holdout)
  c.split_seed = 0           # seed of that held-out split, fixed so the test set never moves between runs
  # TFDS only: 'auto' (stream a training split over streaming.MEMORY_BYTES = 1 GiB as float32, else load it into
  # memory) | 'memory' | 'stream' (read batches from the files while training: same batches, same numbers)
  c.streaming = "auto"
  c.stream_workers = 0       # streamed sets: grain worker processes decoding batches; 0: the training process
  # streamed sets: 'records' (decode TFDS's records as they are read: PNG for MNIST, a few thousand examples/s) |
  # 'prepared' (decode each split once into memory-mapped arrays beside the TFDS files, cnnlab.data.prepared; as
  # much disk as the decoded split; the same batches, read at memory speed)
  c.stream_from = "records"
  return c


def load(config: ml_collections.ConfigDict) -> Dataset | streaming.StreamedDataset:
  """Loads the dataset `config.name` (cached per process: loading is the slow part).

  A TFDS set that `config.streaming` streams is a `streaming.StreamedDataset`, which `train.fit` takes too.
  """
  streaming.check(config.streaming, config.stream_workers, config.stream_from)
  return _load(config.name, config.data_dir, config.download, float(config.test_fraction), int(config.split_seed),
               config.streaming, config.stream_workers, config.stream_from)


@functools.lru_cache(maxsize=8)
def _load(name: str, data_dir: str, download: bool, test_fraction: float, split_seed: int, mode: str = "auto",
          workers: int = 0, source: str = "records") -> Dataset | streaming.StreamedDataset:
  if name.startswith("tfds:"):
    from cnnlab.data import tfds_source  # pylint: disable=g-import-not-at-top
    return tfds_source.load(name[len("tfds:"):], data_dir, download, test_fraction, split_seed, mode, workers,
                            source)
  if mode == "stream":
    raise UserError(f"data.streaming='stream' reads TFDS datasets ('tfds:<name>'); {name!r} is held in memory")
  config = ml_collections.ConfigDict(dict(name=name, test_fraction=test_fraction, split_seed=split_seed))
  return DATASETS.get(name)(config)


def holdout_split(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int,
                  num_classes: int | None = None) -> Dataset:
  """A stratified, seeded train/test split of arrays that ship as one set."""
  if not 0.0 < test_fraction < 1.0:
    raise UserError(f"data.test_fraction must be in (0, 1), got {test_fraction}")
  x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
  return Dataset(name, x_tr.astype(np.float32), y_tr.astype(np.int32), x_te.astype(np.float32),
                 y_te.astype(np.int32), num_classes or int(y.max()) + 1)


def subsample(ds: Dataset, fraction: float, seed: int) -> Dataset:
  """A stratified `fraction` of the training set (the test set is untouched)."""
  if not 0.0 < fraction <= 1.0:
    raise UserError(f"a training fraction must be in (0, 1], got {fraction}")
  if fraction == 1.0:
    return ds
  n = int(round(fraction * len(ds.y_train)))
  if n < ds.num_classes:
    raise UserError(f"a training fraction of {fraction} leaves {n} examples, fewer than the {ds.num_classes} classes")
  idx, _ = train_test_split(np.arange(len(ds.y_train)), train_size=n, random_state=seed, stratify=ds.y_train)
  idx = np.sort(idx)
  return dataclasses.replace(ds, x_train=ds.x_train[idx], y_train=ds.y_train[idx])


def permute_pixels(ds: Dataset, seed: int) -> Dataset:
  """Applies one fixed random permutation to the spatial positions of every example (destroys locality)."""
  spatial = ds.x_train.shape[1:-1]
  perm = np.random.default_rng(seed).permutation(int(np.prod(spatial)))

  def apply(x):
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    return flat[:, perm].reshape(x.shape)

  return dataclasses.replace(ds, name=f"{ds.name}-permuted", x_train=apply(ds.x_train), x_test=apply(ds.x_test))


import_submodules(__name__)
