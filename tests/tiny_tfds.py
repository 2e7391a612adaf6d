"""A tiny real TFDS builder (digits as PNG-encoded `Image` features) for testing the TFDS path offline."""

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image


def _png(a: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(a[..., 0]).save(buf, format="PNG")
  return buf.getvalue()


class CnnlabTinyDigits(tfds.core.GeneratorBasedBuilder):
  """40 train / 20 test 8x8 digits from scikit-learn, stored like MNIST (image + label)."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(0, 40), "test": self._generate_examples(40, 60)}

  def _generate_examples(self, lo, hi):  # pylint: disable=arguments-differ
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    d = load_digits()
    x = (d.images * 255 / 16).astype(np.uint8)[..., None]
    for i in range(lo, hi):
      yield i, {"image": _png(x[i]), "label": int(d.target[i])}
