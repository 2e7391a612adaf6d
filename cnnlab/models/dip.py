"""Deep Image Prior generators: the paper's "skip" hourglass and two nets without an image prior.

`dip_skip` follows `skip()` of Ulyanov, Vedaldi & Lempitsky (2018): per scale a strided 3x3 conv and a 3x3
conv going down, a 1x1 skip branch, and on the way up bilinear upsampling, concat with the skip, a 3x3 and
a 1x1 conv; reflection padding, batch-statistics norm, LeakyReLU(0.2), sigmoid output. The ablations keep
the optimisation but drop the convolutional structure: `dip_pixels` makes every output pixel a free
parameter, `dip_pixel_mlp` maps each pixel's code vector through the same MLP (1x1 convs, no neighbours).
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.errors import UserError
from cnnlab.models import register
from cnnlab.models.layers import reflect_pad


class BatchStatNorm(nn.Module):
  """Batch norm that always uses the batch's own statistics (DIP nets run in train mode throughout)."""
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axes)
    var = x.var(axes)
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


class ConvBlock(nn.Module):
  """Reflection pad -> conv (VALID) -> [norm] -> [LeakyReLU]."""
  features: int
  kernel_size: int
  strides: int = 1
  norm: bool = True
  act: bool = True
  negative_slope: float = 0.2
  pad: Callable = reflect_pad  # (x, pad) -> x reflection-padded by `pad` on both spatial dims

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.pad(x, (self.kernel_size - 1) // 2)
    x = nn.Conv(self.features, (self.kernel_size,) * 2, strides=(self.strides,) * 2, padding="VALID",
                name="conv")(x)
    if self.norm:
      x = BatchStatNorm(name="norm")(x)
    return nn.leaky_relu(x, self.negative_slope) if self.act else x


def upsample2x(x: jax.Array, method: str) -> jax.Array:
  b, h, w, c = x.shape
  # jax.image.resize uses half-pixel centres, i.e. PyTorch's Upsample(align_corners=False) of the paper.
  return jax.image.resize(x, (b, 2 * h, 2 * w, c), method=method)


@register("dip_skip")
class DipSkip(nn.Module):
  """The DIP "skip" encoder-decoder with `depth` scales of `width` channels and `skip_width`-channel skips."""
  width: int = 128
  depth: int = 5
  skip_width: int = 4
  out_channels: int = 3
  kernel_size: int = 3
  skip_kernel: int = 1
  upsample: str = "bilinear"  # 'bilinear' | 'nearest'
  norm: bool = True
  negative_slope: float = 0.2
  sigmoid: bool = True
  pad: Callable = reflect_pad  # the reflection padding of every ConvBlock

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # The paper's net uses batch statistics at every step, so there is no eval mode.
    if x.ndim != 4:
      raise UserError(f"dip_skip needs (B, H, W, C) inputs, got shape {x.shape}")
    if any(s % 2 ** self.depth for s in x.shape[1:3]):
      raise UserError(f"image size {x.shape[1:3]} must be divisible by 2**depth = {2 ** self.depth}")
    block = lambda f, k, s=1, name=None: ConvBlock(f, k, s, self.norm, True, self.negative_slope, self.pad,
                                                         name=name)
    skips = []
    for i in range(self.depth):
      skips.append(block(self.skip_width, self.skip_kernel, name=f"skip{i}")(x) if self.skip_width else None)
      x = block(self.width, self.kernel_size, 2, name=f"down{i}a")(x)
      x = block(self.width, self.kernel_size, name=f"down{i}b")(x)
    for i in reversed(range(self.depth)):
      x = upsample2x(x, self.upsample)
      if skips[i] is not None:
        x = jnp.concatenate([skips[i], x], axis=-1)
      if self.norm:
        x = BatchStatNorm(name=f"concat_norm{i}")(x)
      x = block(self.width, self.kernel_size, name=f"up{i}a")(x)
      x = block(self.width, 1, name=f"up{i}b")(x)
    x = nn.Conv(self.out_channels, (1, 1), name="out")(x)
    return nn.sigmoid(x) if self.sigmoid else x


@register("dip_pixels")
class DipPixels(nn.Module):
  """No prior at all: the image itself is the parameter (sigmoid of free logits, starting at grey)."""
  out_channels: int = 3

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    logits = self.param("logits", nn.initializers.zeros, (*x.shape[1:3], self.out_channels))
    return jnp.broadcast_to(nn.sigmoid(logits), (*x.shape[:3], self.out_channels))


@register("dip_pixel_mlp")
class DipPixelMLP(nn.Module):
  """The same code -> image optimisation through a per-pixel MLP (1x1 convs): no spatial structure."""
  width: int = 128
  depth: int = 3
  out_channels: int = 3
  negative_slope: float = 0.2

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    for i in range(self.depth):
      x = nn.leaky_relu(nn.Dense(self.width, name=f"dense{i}")(x), self.negative_slope)
    return nn.sigmoid(nn.Dense(self.out_channels, name="out")(x))
