"""VGG nets (Simonyan & Zisserman 2015, Table 1 configurations A and D) with BatchNorm, for 32x32 inputs.

As in the common CIFAR variant (kuangliu/pytorch-cifar `models/vgg.py`): the paper's conv stack (3x3 convs with
bias, 2x2 max-pooling), each conv followed by BatchNorm and ReLU, and a single dense layer on the flattened
512-channel output in place of the paper's three fully-connected ImageNet layers. Five poolings take 32x32 to
1x1. Works for 1-D (B, L, C) as well as 2-D (B, H, W, C) inputs.
"""

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnlab.errors import UserError
from cnnlab.models import layers, register

# Conv widths in order, "M" = 2x2 max-pool (the paper's configurations A = VGG-11 and D = VGG-16).
VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
  """[3x3 conv -> BatchNorm -> ReLU] per width, 2x2 max-pool per "M", flatten, one dense classifier."""
  features: Sequence[int | str] = VGG16
  num_classes: int = 10
  act: str = "relu"
  conv: layers.ModuleDef = nn.Conv
  norm: layers.ModuleDef = nn.BatchNorm
  pool_fn: Callable = layers.pool  # (x, kind) -> pooled x, 2x2 window, stride 2

  @nn.compact
  def __call__(self, x, train: bool = False):
    d = x.ndim - 2
    # Conv biases are redundant before BatchNorm but kept, as in the reference code, so parameter counts match.
    conv = functools.partial(self.conv, kernel_size=(3,) * d, padding=[(1, 1)] * d)
    norm = functools.partial(self.norm, use_running_average=not train, momentum=0.9, epsilon=1e-5)
    act = layers.activation(self.act)
    for i, width in enumerate(self.features):
      if width == "M":
        if any(s < 2 for s in x.shape[1:-1]):
          raise UserError(f"VGG max-pool {i} gets a {'x'.join(map(str, x.shape[1:-1]))} input; use inputs of "
                          f"at least 32 pixels per side or fewer 'M' entries")
        x = self.pool_fn(x, "max")
      elif isinstance(width, int) and not isinstance(width, bool):
        x = act(norm(name=f"bn{i}")(conv(width, name=f"conv{i}")(x)))
      else:
        raise UserError(f"VGG features must be positive ints or 'M', got {width!r}")
    x = jnp.reshape(x, (x.shape[0], -1))
    return nn.Dense(self.num_classes, name="head")(x)


VGG11CIFAR = register("vgg11_cifar", functools.partial(VGG, features=VGG11))
VGG16CIFAR = register("vgg16_cifar", functools.partial(VGG, features=VGG16))
