"""Classic fixed filters (Gaussian, Sobel, Harris) built on cnnlab's convolution.

Every filter here is `conv_ops.conv_lax` with a hand-made kernel, i.e. the op a CNN layer uses
with weights nobody learned. Boundaries follow `scipy.ndimage` mode names so that each result can
be checked against scipy / scikit-image:
  'reflect' (d c b a | a b c d | d c b a), 'mirror' (d c b | a b c d | c b a), 'nearest', 'wrap', 'constant'.
Images are (H, W) or (B, H, W) float arrays.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnlab.ops import conv_ops
from cnnlab.errors import UserError

# scipy.ndimage boundary mode -> jnp.pad mode.
PAD_MODES = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap", "constant": "constant"}


def _pad_mode(mode: str) -> str:
  if mode not in PAD_MODES:
    raise UserError(f"unknown boundary mode {mode!r}; use one of {sorted(PAD_MODES)}")
  return PAD_MODES[mode]


@functools.partial(jax.jit, static_argnames=("mode",))
def filter2d(image: jax.Array, kernel: jax.Array, mode: str = "reflect", cval: float = 0.0) -> jax.Array:
  """Cross-correlates (B, H, W) or (H, W) images with a 2-D kernel centred at k // 2, as `ndimage.correlate`."""
  img = jnp.asarray(image, jnp.float32)
  batched = img.ndim == 3
  img = img if batched else img[None]
  kh, kw = kernel.shape
  pads = [(0, 0), (kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2)]
  pad_mode = _pad_mode(mode)
  img = jnp.pad(img, pads, mode=pad_mode, **({"constant_values": cval} if pad_mode == "constant" else {}))
  out = conv_ops.conv_lax(img[..., None], jnp.asarray(kernel, jnp.float32)[:, :, None, None],
                          precision=lax.Precision.HIGHEST)[..., 0]
  return out if batched else out[0]


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
  """Normalised samples of exp(-x^2 / 2 sigma^2) on |x| <= round(truncate * sigma), as scipy uses."""
  if sigma <= 0:
    raise UserError(f"Gaussian sigma must be > 0, got {sigma}")
  radius = int(truncate * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  w = np.exp(-0.5 * (x / sigma) ** 2)
  return w / w.sum()


def gaussian_kernel2d(sigma: float, truncate: float = 4.0) -> np.ndarray:
  """The separable 2-D Gaussian: outer product of two 1-D ones."""
  g = gaussian_kernel1d(sigma, truncate)
  return np.outer(g, g)


def gaussian_filter(image: jax.Array, sigma: float, mode: str = "reflect", cval: float = 0.0,
                    truncate: float = 4.0) -> jax.Array:
  """Gaussian smoothing as two 1-D convolutions (rows, then columns), like `ndimage.gaussian_filter`."""
  g = gaussian_kernel1d(sigma, truncate)
  return filter2d(filter2d(image, g[:, None], mode, cval), g[None, :], mode, cval)


def sobel_kernel(axis: int) -> np.ndarray:
  """3x3 Sobel kernel differentiating along `axis` (0 = rows, 1 = columns), smoothing [1, 2, 1] across it."""
  d, s = np.array([-1.0, 0.0, 1.0]), np.array([1.0, 2.0, 1.0])
  if axis not in (0, 1):
    raise UserError(f"Sobel axis must be 0 (rows) or 1 (columns), got {axis}")
  return np.outer(d, s) if axis == 0 else np.outer(s, d)


def sobel(image: jax.Array, axis: int, mode: str = "reflect", cval: float = 0.0) -> jax.Array:
  """Image derivative along `axis` with the Sobel kernel, as `ndimage.sobel`."""
  return filter2d(image, sobel_kernel(axis), mode, cval)


def sobel_magnitude(image: jax.Array, mode: str = "reflect") -> jax.Array:
  """Gradient magnitude sqrt(Gr^2 + Gc^2) from the two Sobel derivatives: large on edges."""
  return jnp.hypot(sobel(image, 0, mode), sobel(image, 1, mode))


def structure_tensor(image: jax.Array, sigma: float = 1.0, mode: str = "constant") -> tuple[jax.Array, ...]:
  """(Arr, Arc, Acc): Gaussian-weighted sums of products of the Sobel derivatives (skimage's convention)."""
  gr, gc = sobel(image, 0, mode), sobel(image, 1, mode)
  return tuple(gaussian_filter(a * b, sigma, mode) for a, b in ((gr, gr), (gr, gc), (gc, gc)))


def harris_response(image: jax.Array, sigma: float = 1.0, k: float = 0.05) -> jax.Array:
  """Harris corner measure det(A) - k trace(A)^2: large where the image changes along two directions."""
  arr, arc, acc = structure_tensor(image, sigma)
  return arr * acc - arc ** 2 - k * (arr + acc) ** 2


def find_peaks(response: jax.Array, min_distance: int = 1, threshold_rel: float = 0.01,
               exclude_border: bool = True) -> np.ndarray:
  """(row, col) of pixels that are the maximum of their (2 min_distance + 1)^2 window and above threshold_rel * max."""
  r = jnp.asarray(response, jnp.float32)
  size = 2 * min_distance + 1
  local_max = lax.reduce_window(r, -jnp.inf, lax.max, (size, size), (1, 1), "SAME")
  mask = np.array((r == local_max) & (r > threshold_rel * r.max()))
  if exclude_border:
    b = min_distance
    mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = False, False, False, False
  return np.argwhere(mask)
