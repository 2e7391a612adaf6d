"""Canvases of real handwritten digits at random positions, with per-pixel labels and boxes (seeded, cached).

Each canvas is a zero `size` x `size` image onto which `min_digits`..`max_digits` digits of a registered
dataset (`mnist5k`: real 28x28 MNIST; `digits`: real 8x8) are pasted, optionally shrunk `digit_scale` times
(block averages: MNIST at 14x14 keeps a 32x32 canvas of 1-3 digits cheap on a CPU). A digit is first cropped
to the box of its ink (pixels > 0); positions are drawn uniformly and rejected while that box would overlap
an earlier digit's, so digits never touch and every pixel has one owner (a digit with no free place after `_TRIES`
draws is left out: a crowded canvas may hold fewer digits; `count` says how many).

Targets, all from the digit's own pixels:
  labels   per pixel: 0 background, c + 1 where a digit of class c has stroke intensity > `threshold`
           (its faint anti-aliased rim below the threshold counts as background);
  boxes    (top, left, bottom, right) of each digit's stroke pixels, bottom/right exclusive (`cnnlab.metrics.boxes`).
Train canvases use training digits only, test canvases test digits only; the same arguments always
give the same arrays (a numpy generator seeded with (seed, split)), built once per process.
"""

import dataclasses
import functools
import json

import ml_collections
import numpy as np

from cnnlab import data
from cnnlab.errors import UserError

_TRIES = 100  # position draws per digit before it is left out


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  """Canvas fields shared by the segmentation and localisation experiments (`quick`: tiny 8x8-digit canvases)."""
  c = ml_collections.ConfigDict()
  c.size = 32                # canvas height and width in pixels
  c.digit_scale = 2          # shrink each digit by this integer factor (block average) before pasting; 1 keeps it
  c.min_digits = 1           # digits per canvas: uniform in [min_digits, max_digits]
  c.max_digits = 3
  c.n_train = 4000           # canvases built from training digits
  c.n_test = 500             # canvases built from test digits
  c.threshold = 0.3          # stroke pixels: intensity above this (they carry the label and define the box)
  c.seed = 0                 # canvas seed, fixed so the canvases never move between runs
  if quick:                  # for the `digits` data set (8x8 digits): 16x16 canvases, few of them
    c.size = 16
    c.digit_scale = 1
    c.n_train = 600
    c.n_test = 100
  return c


@dataclasses.dataclass(frozen=True)
class Canvases:
  """N canvases of up to M digits; digit slots past `count` hold class -1 and box 0."""
  x_NHWC: np.ndarray         # float32 images in [0, 1]
  labels_NHW: np.ndarray     # int32, 0 background, class + 1 on a digit's strokes
  classes_NM: np.ndarray     # int32 class of each pasted digit (-1: empty slot)
  boxes_NM4: np.ndarray      # int32 stroke box of each pasted digit
  count_N: np.ndarray        # int32 number of digits on each canvas


def ink_crop(digit_HW: np.ndarray) -> np.ndarray:
  """The digit cut to the box of its nonzero pixels."""
  rows, cols = np.nonzero(digit_HW)
  if rows.size == 0:
    return digit_HW[:1, :1]
  return digit_HW[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def stroke_box(mask_HW: np.ndarray) -> np.ndarray:
  """(top, left, bottom, right) of the True pixels, bottom/right exclusive; zeros if there are none."""
  rows, cols = np.nonzero(mask_HW)
  if rows.size == 0:
    return np.zeros(4, np.int32)
  return np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1], np.int32)


def shrink(x_NHWC: np.ndarray, factor: int) -> np.ndarray:
  """Block-averages the spatial dims by an integer `factor` (an incomplete last row/column is dropped)."""
  if not isinstance(factor, int) or factor < 1:
    raise UserError(f"digit_scale must be a positive integer, got {factor!r}")
  n, h, w, c = x_NHWC.shape
  h, w = h // factor, w // factor
  return x_NHWC[:, :h * factor, :w * factor].reshape(n, h, factor, w, factor, c).mean(axis=(2, 4))


def make(x_NHWC: np.ndarray, y_N: np.ndarray, n: int, size: int, min_digits: int, max_digits: int,
         threshold: float, seed: int) -> Canvases:
  """`n` canvases of digits drawn (with replacement) from the single-channel images `x_NHWC` of classes `y_N`."""
  if not 1 <= min_digits <= max_digits or n < 1 or not 0.0 <= threshold < 1.0:
    raise UserError(f"canvases need n >= 1, 1 <= min_digits <= max_digits and threshold in [0, 1), got n={n}, "
                    f"digits {min_digits}..{max_digits}, threshold {threshold}")
  if x_NHWC.shape[-1] != 1 or x_NHWC.ndim != 4:
    raise UserError(f"canvases need single-channel 2-D digits (N, H, W, 1), got {x_NHWC.shape}")
  if size < max(x_NHWC.shape[1:3]):
    raise UserError(f"canvas size {size} is smaller than the {x_NHWC.shape[1]}x{x_NHWC.shape[2]} digits")
  rng = np.random.default_rng(seed)
  x = np.zeros((n, size, size, 1), np.float32)
  labels = np.zeros((n, size, size), np.int32)
  classes = np.full((n, max_digits), -1, np.int32)
  boxes_ = np.zeros((n, max_digits, 4), np.int32)
  count = np.zeros(n, np.int32)
  for i in range(n):
    taken = np.zeros((size, size), bool)
    for _ in range(rng.integers(min_digits, max_digits + 1)):
      j = int(rng.integers(len(y_N)))
      digit = ink_crop(x_NHWC[j, ..., 0])
      h, w = digit.shape
      for _ in range(_TRIES):
        top, left = int(rng.integers(size - h + 1)), int(rng.integers(size - w + 1))
        if not taken[top:top + h, left:left + w].any():
          break
      else:
        continue
      taken[top:top + h, left:left + w] = True
      x[i, top:top + h, left:left + w, 0] = digit
      strokes = digit > threshold
      labels[i, top:top + h, left:left + w][strokes] = y_N[j] + 1
      k = count[i]
      classes[i, k] = y_N[j]
      boxes_[i, k] = stroke_box(strokes) + np.array([top, left, top, left], np.int32)
      count[i] += 1
  return Canvases(x, labels, classes, boxes_, count)


@functools.lru_cache(maxsize=8)
def _splits(data_json: str, size: int, digit_scale: int, min_digits: int, max_digits: int, n_train: int, n_test: int,
            threshold: float, seed: int) -> tuple[Canvases, Canvases, int]:
  ds = data.load(ml_collections.ConfigDict(json.loads(data_json)))
  args = (size, min_digits, max_digits, threshold)
  train = make(shrink(ds.x_train, digit_scale), ds.y_train, n_train, *args, seed=seed * 2)
  test = make(shrink(ds.x_test, digit_scale), ds.y_test, n_test, *args, seed=seed * 2 + 1)
  return train, test, ds.num_classes


def load(data_config: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> tuple[Canvases, Canvases, int]:
  """(train canvases, test canvases, number of digit classes) of the dataset `data_config` (`data.get_config()`)."""
  return _splits(data_config.to_json(), int(config.size), config.digit_scale, int(config.min_digits),
                 int(config.max_digits),
                 int(config.n_train), int(config.n_test), float(config.threshold), int(config.seed))


def segmentation_dataset(data_config: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> data.Dataset:
  """Canvases with per-pixel labels: K + 1 classes (background, then the K digit classes)."""
  train, test, k = load(data_config, config)
  return data.Dataset(f"{data_config.name}-canvas{config.size}-seg", train.x_NHWC, train.labels_NHW, test.x_NHWC,
                      test.labels_NHW, k + 1)


def localisation_dataset(data_config: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> data.Dataset:
  """Canvases of exactly one digit (min/max_digits are ignored); y = (class, top, left, bottom, right)."""
  one = ml_collections.ConfigDict({**config.to_dict(), "min_digits": 1, "max_digits": 1})
  train, test, k = load(data_config, one)

  def targets(c: Canvases) -> np.ndarray:
    return np.concatenate([c.classes_NM[:, :1], c.boxes_NM4[:, 0]], axis=1)

  return data.Dataset(f"{data_config.name}-canvas{config.size}-loc", train.x_NHWC, targets(train), test.x_NHWC,
                      targets(test), k)


def held_out(ds: data.Dataset, n: int) -> data.Dataset:
  """`ds` with its first `n` training canvases as the test split and the rest as the training split: where
  canvas experiments choose a learning rate (canvases carry boxes or masks, so no stratified split)."""
  return data.Dataset(f"{ds.name}-val", ds.x_train[n:], ds.y_train[n:], ds.x_train[:n], ds.y_train[:n],
                      ds.num_classes)
