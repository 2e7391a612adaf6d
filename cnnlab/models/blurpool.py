"""Anti-aliased downsampling (Zhang 2019, "Making convolutional networks shift-invariant again").

Subsampling without a low-pass filter aliases: a one-pixel shift of the input can change the
subsampled map completely. BlurPool blurs each channel with a fixed binomial filter, then subsamples.
The blur is separable, so it is computed as weighted strided slices along each spatial dim
(cheaper on XLA:CPU than a depthwise conv, and exact).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.errors import UserError

PAD_MODES = {"reflect": "reflect", "zero": "constant", "circular": "wrap"}


def binomial_filter(size: int) -> np.ndarray:
  """Normalised 1-D binomial filter of `size` taps (3: [1, 2, 1] / 4)."""
  if size < 1:
    raise UserError(f"blur filter size must be >= 1, got {size}")
  f = np.array([1.0])
  for _ in range(size - 1):
    f = np.convolve(f, [1.0, 1.0])
  return f / f.sum()


def blur_pool(x: jax.Array, filter_size: int = 3, stride: int = 2, pad_mode: str = "reflect") -> jax.Array:
  """Blurs every channel of (B, *spatial, C) with a binomial filter, then keeps every `stride`-th sample.

  Padding is (k-1)//2 before and k//2 after, so the output has ceil(n / stride) samples like 'SAME'.
  """
  if pad_mode not in PAD_MODES:
    raise UserError(f"unknown blur padding {pad_mode!r}; use one of {sorted(PAD_MODES)}")
  taps = binomial_filter(filter_size)
  for axis in range(1, x.ndim - 1):
    n = x.shape[axis]
    pads = [(0, 0)] * x.ndim
    pads[axis] = ((filter_size - 1) // 2, filter_size // 2)
    xp = jnp.pad(x, pads, mode=PAD_MODES[pad_mode])
    out = -(-n // stride)
    acc = 0.0
    for k, w in enumerate(taps):
      acc = acc + float(w) * jax.lax.slice_in_dim(xp, k, k + (out - 1) * stride + 1, stride, axis=axis)
    x = acc
  return x


def max_stride1(x: jax.Array) -> jax.Array:
  """2-wide max over every spatial dim with stride 1 ('VALID': each dim shrinks by one)."""
  d = x.ndim - 2
  return nn.max_pool(x, (2,) * d, (1,) * d)


class BlurPool(nn.Module):
  """Parameter-free layer: binomial blur then subsampling (use after a stride-1 max or a stride-1 conv)."""
  filter_size: int = 3
  stride: int = 2
  pad_mode: str = "reflect"

  @nn.compact
  def __call__(self, x):
    return blur_pool(x, self.filter_size, self.stride, self.pad_mode)
