"""Bundled real photographs (no downloads) as float32 crops in [0, 1], and the corruptions DIP undoes."""

import functools

import numpy as np

from cnnlab.errors import UserError


def _skimage(name: str) -> np.ndarray:
  import skimage.data  # pylint: disable=g-import-not-at-top
  return getattr(skimage.data, name)()


def _sklearn(name: str) -> np.ndarray:
  from sklearn.datasets import load_sample_image  # pylint: disable=g-import-not-at-top
  return load_sample_image(f"{name}.jpg")


# Only images shipped inside the installed wheels: skimage.data names that need pooch would download.
SOURCES = {
    "astronaut": _skimage, "camera": _skimage, "coffee": _skimage, "chelsea": _skimage,
    "china": _sklearn, "flower": _sklearn,
}


@functools.lru_cache(maxsize=None)
def _raw(name: str) -> np.ndarray:
  if name not in SOURCES:
    raise UserError(f"unknown image {name!r}; bundled images: {', '.join(sorted(SOURCES))}")
  return SOURCES[name](name)


def load(name: str, size: int, crop: float = 1.0) -> np.ndarray:
  """The central square `crop` fraction of image `name`, resized to (size, size, C), float32 in [0, 1].

  C is 3 for colour photos and 1 for grey ones (camera).
  """
  from skimage.transform import resize  # pylint: disable=g-import-not-at-top
  if not 0 < crop <= 1:
    raise UserError(f"crop must be in (0, 1], got {crop}")
  img = _raw(name)
  img = img[..., None] if img.ndim == 2 else img
  side = int(min(img.shape[:2]) * crop)
  top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
  img = img[top:top + side, left:left + side].astype(np.float32) / 255.0
  out = resize(img, (size, size, img.shape[2]), order=3, anti_aliasing=True, preserve_range=True)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def add_gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
  """`img` + N(0, sigma^2) noise, clipped to [0, 1] as in the paper's code."""
  return np.clip(img + rng.normal(0.0, sigma, img.shape), 0.0, 1.0).astype(np.float32)


def drop_pixels(img: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Zeroes a random `fraction` of pixels (all channels); returns (corrupted image, (H, W, 1) keep-mask)."""
  mask = (rng.random(img.shape[:2] + (1,)) >= fraction).astype(np.float32)
  return img * mask, mask


def shuffle_pixels(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """The same pixel values at random positions: image statistics without spatial structure."""
  flat = img.reshape(-1, img.shape[-1])
  return flat[rng.permutation(flat.shape[0])].reshape(img.shape)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
  """Per-channel Gaussian blur with reflecting borders."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  return ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0), mode="reflect").astype(np.float32)


def fill_by_blur(img: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
  """Normalised convolution: blur(img * mask) / blur(mask) estimates missing pixels from known neighbours."""
  num = gaussian_blur(img * mask, sigma)
  den = gaussian_blur(np.broadcast_to(mask, img.shape).astype(np.float32), sigma)
  filled = num / np.maximum(den, 1e-6)
  return np.where(mask > 0, img, filled).astype(np.float32)
