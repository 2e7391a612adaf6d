"""scikit-learn's 8x8 handwritten digits (1,797 real images, bundled with scikit-learn)."""

import numpy as np
from sklearn.datasets import load_digits

from cnnlab.data import Dataset, holdout_split, register


@register("digits")
def load(config) -> Dataset:
  d = load_digits()
  x = (d.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1), pixel values 0..16
  return holdout_split("digits", x, d.target, config.test_fraction, config.split_seed, num_classes=10)
