"""TFDS's MNIST-format datasets prepared offline from their four raw IDX files, without TensorFlow.

TFDS's builders for `mnist`, `fashion_mnist` and `kmnist` download these files and decode them with
TensorFlow. This writes the same dataset (TFDS's name, version, features and splits; array_record files)
from files already on disk, so `--config.data.name=tfds:mnist` works on a machine that reaches no dataset
server and has no TensorFlow:

    python -m cnnlab.data.idx mnist DIR [--data_dir=TFDS_DATA_DIR]

DIR holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
t10k-labels-idx1-ubyte, as distributed (`.gz` or not; a '.' for the last '-' is accepted too). Each
file's IDX header is checked (type code, shape, matching counts) before anything is written.
"""

import argparse
import gzip
import io
import os
import sys

import numpy as np

from cnnlab.errors import UserError

NAMES = ("mnist", "fashion_mnist", "kmnist")  # TFDS builders that read these four files
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_UBYTE = 0x08  # IDX type code of unsigned bytes


def find(folder: str, stem: str) -> str:
  """The file for `stem` in `folder`: as distributed, gzipped, and/or with '.idx' for '-idx'."""
  dotted = stem.replace("-idx", ".idx")
  for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
    if os.path.isfile(os.path.join(folder, name)):
      return os.path.join(folder, name)
  raise UserError(f"{stem} (or .gz, or {dotted}) is not in {folder}")


def read(path: str, ndim: int) -> np.ndarray:
  """The uint8 array in IDX file `path` with `ndim` dimensions (its header checked)."""
  with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 + 4 * ndim or raw[:2] != b"\0\0" or raw[2] != _UBYTE or raw[3] != ndim:
    raise UserError(f"{path} is not an IDX file of unsigned bytes with {ndim} dimension(s)")
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
  body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)):
    raise UserError(f"{path}: its header says {shape} ({int(np.prod(shape))} bytes), it holds {body.size}")
  return body.reshape(shape)


def read_split(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images (N, 28, 28, 1), labels (N,)) of `split` ('train' | 'test') from the IDX files in `folder`."""
  images, labels = (read(find(folder, stem), ndim) for stem, ndim in zip(FILES[split], (3, 1)))
  if images.shape[1:] != (28, 28) or len(images) != len(labels):
    raise UserError(f"{split}: {images.shape} images and {labels.shape} labels; expected (N, 28, 28) and (N,)")
  if labels.size and labels.max() > 9:
    raise UserError(f"{split}: label {labels.max()} found; these datasets have 10 classes")
  return images[..., None], labels


def _png(image: np.ndarray) -> bytes:
  """PNG bytes of one (28, 28, 1) image (TFDS's own image encoder needs TensorFlow)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(image[..., 0]).save(buf, format="PNG")
  return buf.getvalue()


def prepare(name: str, folder: str, data_dir: str = "") -> str:
  """Writes TFDS dataset `name` into `data_dir` (TFDS's default if '') from the IDX files in `folder`;
  returns the prepared dataset's folder. Does nothing when it is already prepared there."""
  if name not in NAMES:
    raise UserError(f"'{name}' is not one of {', '.join(NAMES)} (the TFDS datasets made of these IDX files)")
  splits = {split: read_split(folder, split) for split in FILES}  # every file checked before anything is written
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class FromIdx(tfds.builder_cls(name), skip_registration=True):
    """TFDS's builder for `name`, reading the arrays above instead of downloading."""

    def _split_generators(self, dl_manager):
      del dl_manager
      return [tfds.core.SplitGenerator(name=split, gen_kwargs={"split": split}) for split in splits]

    def _generate_examples(self, split):  # pylint: disable=arguments-differ
      images, labels = splits[split]
      for i, (image, label) in enumerate(zip(images, labels)):
        yield i, {"image": _png(image), "label": int(label)}

  FromIdx.name = name
  builder = FromIdx(data_dir=data_dir or None)
  builder.download_and_prepare(file_format="array_record")
  return builder.data_dir


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("name", help=f"TFDS dataset: {' | '.join(NAMES)}")
  parser.add_argument("folder", help="folder holding the four IDX files")
  parser.add_argument("--data_dir", default="", help="TFDS data_dir to prepare into (default: TFDS's own)")
  args = parser.parse_args(argv)
  try:
    where = prepare(args.name, args.folder, args.data_dir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"prepared {where}; train with --config.data.name=tfds:{args.name}"
        + (f" --config.data.data_dir={args.data_dir}" if args.data_dir else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
