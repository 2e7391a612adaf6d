"""A conv net whose only variable is how it downsamples: none, strided conv, max, avg, L2, or anti-aliased.

Each stage is conv(k) -> ReLU -> downsample by 2. Works for 1-D (B, L, C) and 2-D (B, H, W, C)
inputs. Used by the translation and pooling experiments so that variants differ in one choice only.
"""

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.models import blurpool, layers
from cnnlab.errors import UserError
from cnnlab.models import register

DOWNSAMPLES = ("none", "stride", "max", "avg", "l2", "maxblur", "strideblur")


def downsample(x, kind: str, pad_mode: str = "reflect", pool_fn: Callable = layers.pool):
  """Downsampling by 2 after a stride-1 conv + ReLU ('stride' is done by the conv itself)."""
  if kind in ("none", "stride"):
    return x
  if kind in ("max", "avg"):
    return pool_fn(x, kind)
  if kind == "l2":  # L2 pooling: root of the mean of squares over each 2-wide window
    return jnp.sqrt(pool_fn(x * x, "avg") + 1e-8)
  if kind == "maxblur":  # Zhang 2019: 2-wide max with stride 1, then blur + subsample
    return blurpool.blur_pool(pool_fn(x, "max", 2, 1), pad_mode=pad_mode)
  if kind == "strideblur":  # Zhang 2019: conv (stride 1) + ReLU, then blur + subsample
    return blurpool.blur_pool(x, pad_mode=pad_mode)
  raise UserError(f"unknown downsampling {kind!r}; use one of {DOWNSAMPLES}")


@register("poolnet")
class PoolNet(nn.Module):
  """[conv(k) -> ReLU -> downsample] per stage, then a flatten or global-average-pool head."""
  features: tuple[int, ...] = (16, 32)
  kernel_size: int = 3
  downsample: str = "max"   # one of DOWNSAMPLES
  head: str = "flatten"     # 'flatten' | 'gap'
  padding: str = "SAME"     # conv padding ('SAME' zero padding, or 'CIRCULAR')
  num_classes: int = 10
  conv: layers.ModuleDef = nn.Conv
  pool_fn: Callable = layers.pool  # (x, kind, window=2, stride=window) -> pooled x

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    d = layers.spatial_dims(x)
    if self.downsample not in DOWNSAMPLES:
      raise UserError(f"unknown downsampling {self.downsample!r}; use one of {DOWNSAMPLES}")
    stride = 2 if self.downsample == "stride" else 1
    for i, width in enumerate(self.features):
      x = self.conv(width, (self.kernel_size,) * d, strides=(stride,) * d, padding=self.padding, name=f"conv{i}")(x)
      x = downsample(nn.relu(x), self.downsample, pool_fn=self.pool_fn)
    x = layers.head_features(x, self.head)
    return nn.Dense(self.num_classes, name="head")(x)
