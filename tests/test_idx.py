"""cnnlab.data.idx: TFDS's mnist prepared offline from raw IDX files reads back as the same images."""

import gzip
import os

import numpy as np
import pytest

from cnnlab import data
from cnnlab.data import idx
from cnnlab.errors import UserError


def _idx_bytes(a: np.ndarray) -> bytes:
  return bytes([0, 0, 8, a.ndim]) + np.array(a.shape, ">u4").tobytes() + a.astype(np.uint8).tobytes()


def _write(folder, train=30, test=10, seed=0):
  """Four IDX files of random 28x28 images: train files gzipped, test files named with '.idx' as some copies are."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, n, opener, name in (("train", train, gzip.open, "{}.gz"), ("test", test, open, "{}")):
    x, y = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
    images, labels = idx.FILES[split]
    if split == "test":
      images, labels = images.replace("-idx", ".idx"), labels.replace("-idx", ".idx")
    for stem, a in ((images, x), (labels, y)):
      with opener(os.path.join(folder, name.format(stem)), "wb") as f:
        f.write(_idx_bytes(a))
    arrays[split] = (x.astype(np.uint8), y)
  return arrays


def _by_image(x, y):
  return {np.round(a[..., 0] * 255).astype(np.uint8).tobytes(): int(b) for a, b in zip(x, y)}


def test_prepared_mnist_reads_back_the_idx_files(tmp_path):
  src, data_dir = tmp_path / "src", tmp_path / "tfds"
  src.mkdir()
  arrays = _write(str(src))
  where = idx.prepare("mnist", str(src), str(data_dir))
  assert os.path.basename(os.path.dirname(where)) == "mnist"
  c = data.get_config()
  c.name, c.data_dir, c.download = "tfds:mnist", str(data_dir), False
  ds = data.load(c)
  assert ds.x_train.shape == (30, 28, 28, 1) and ds.x_test.shape == (10, 28, 28, 1) and ds.num_classes == 10
  for split, (x, y) in arrays.items():  # TFDS shuffles records as it prepares: match images to labels
    got = _by_image(getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}"))
    assert got == {a.tobytes(): int(b) for a, b in zip(x, y)}


def test_bad_files_are_rejected_before_anything_is_written(tmp_path):
  src, data_dir = tmp_path / "src", tmp_path / "tfds"
  src.mkdir()
  _write(str(src))
  with open(src / "t10k-labels.idx1-ubyte", "wb") as f:  # a count that does not match the images'
    f.write(_idx_bytes(np.zeros(9)))
  with pytest.raises(UserError, match=r"\(10, 28, 28\) images and \(9,\) labels"):
    idx.prepare("mnist", str(src), str(data_dir))
  with open(src / "t10k-labels.idx1-ubyte", "wb") as f:
    f.write(b"not an idx file")
  with pytest.raises(UserError, match="not an IDX file"):
    idx.prepare("mnist", str(src), str(data_dir))
  os.remove(src / "t10k-labels.idx1-ubyte")
  assert idx.main(["mnist", str(src), f"--data_dir={data_dir}"]) == 2
  assert idx.main(["cifar10", str(src), f"--data_dir={data_dir}"]) == 2
  assert not data_dir.exists()
