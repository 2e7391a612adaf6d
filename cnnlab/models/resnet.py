"""CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition") in plain flax layers.

`resnet20/32/44/56/110` are section 4.2's CIFAR-10 nets: a 3x3 conv with 16 filters, 3 stages of n basic
blocks with 16, 32 and 64 filters (6n + 2 weighted layers), global average pooling and a dense classifier.
They use shortcut option A, the paper's choice for CIFAR: identity shortcuts, which at a stage change take
every other position and pad the new channels with zeros, so the shortcuts have no parameters.

`resnet18_cifar` is the ImageNet ResNet-18 (section 3.4, Table 1) as common CIFAR code adapts it to 32x32
inputs (kuangliu/pytorch-cifar): a 3x3 stride-1 stem without max-pooling, then 4 stages of 2 basic blocks with
64, 128, 256 and 512 filters. It uses option B: a 1x1 conv + BatchNorm projection where the shape changes,
identity elsewhere.

Every conv is followed by BatchNorm ("right after each convolution and before activation", section 3.4).
Works for 1-D (B, L, C) as well as 2-D (B, H, W, C) inputs.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.errors import UserError
from cnnlab.models import layers, register

# The paper initialises "as in [13]" (He et al. 2015): zero-mean Gaussian with std sqrt(2 / fan_in).
_HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def _option_a(x: jax.Array, strides: int, features: int) -> jax.Array:
  """Parameter-free shortcut: every `strides`-th position, extra channels zero (He et al. 2016, option A)."""
  d = x.ndim - 2
  x = x[(slice(None), *(slice(None, None, strides),) * d)]
  return jnp.pad(x, [(0, 0)] * (d + 1) + [(0, features - x.shape[-1])])


class BasicBlock(nn.Module):
  """Two 3x3 conv-BN layers plus a shortcut, ReLU after the sum (He et al. 2016, Fig. 2 left)."""
  features: int
  strides: int
  shortcut: str   # 'A' (zero-padded identity) | 'B' (projection where the shape changes)
  conv: layers.ModuleDef
  norm: layers.ModuleDef
  act: str = "relu"

  @nn.compact
  def __call__(self, x):
    d = x.ndim - 2
    act = layers.activation(self.act)
    # Symmetric padding 1 (not 'SAME', which pads stride-2 convs only at the end) centres a stride-2 conv's
    # outputs on the even positions, the ones the shortcut keeps.
    y = self.conv(self.features, (3,) * d, (self.strides,) * d, padding=[(1, 1)] * d, name="conv1")(x)
    y = act(self.norm(name="bn1")(y))
    y = self.conv(self.features, (3,) * d, padding=[(1, 1)] * d, name="conv2")(y)
    y = self.norm(name="bn2")(y)
    if x.shape != y.shape:
      if self.shortcut == "A":
        x = _option_a(x, self.strides, self.features)
      else:
        x = self.conv(self.features, (1,) * d, (self.strides,) * d, padding="VALID", name="proj_conv")(x)
        x = self.norm(name="proj_bn")(x)
    return act(y + x)


class ResNet(nn.Module):
  """3x3 conv-BN-ReLU stem, stages of basic blocks (the first block of each later stage halves the size), GAP, dense."""
  stage_sizes: Sequence[int] = (3, 3, 3)
  widths: Sequence[int] = (16, 32, 64)
  shortcut: str = "A"
  num_classes: int = 10
  act: str = "relu"
  conv: layers.ModuleDef = nn.Conv
  norm: layers.ModuleDef = nn.BatchNorm

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.shortcut not in ("A", "B"):
      raise UserError(f"ResNet shortcut must be 'A' (zero-padded identity) or 'B' (projection), got {self.shortcut!r}")
    if len(self.stage_sizes) != len(self.widths):
      raise UserError(f"ResNet needs one width per stage, got stage_sizes={self.stage_sizes} widths={self.widths}")
    d = x.ndim - 2
    conv = functools.partial(self.conv, use_bias=False, kernel_init=_HE_NORMAL)
    # momentum 0.9 is PyTorch's 0.1, which the reference CIFAR implementations train with.
    norm = functools.partial(self.norm, use_running_average=not train, momentum=0.9, epsilon=1e-5)
    x = conv(self.widths[0], (3,) * d, padding=[(1, 1)] * d, name="stem_conv")(x)
    x = layers.activation(self.act)(norm(name="stem_bn")(x))
    for i, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(width, strides, self.shortcut, conv, norm, self.act, name=f"stage{i + 1}_block{j + 1}")(x)
    x = jnp.mean(x, axis=tuple(range(1, d + 1)))
    return nn.Dense(self.num_classes, name="head")(x)


for _depth in (20, 32, 44, 56, 110):
  register(f"resnet{_depth}", functools.partial(ResNet, stage_sizes=((_depth - 2) // 6,) * 3))

ResNet18CIFAR = register("resnet18_cifar", functools.partial(ResNet, stage_sizes=(2, 2, 2, 2),
                                                             widths=(64, 128, 256, 512), shortcut="B"))
