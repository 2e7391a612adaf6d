"""Single-object detectors: one class and one box per image, from a CNN or (no conv stages) an MLP.

Outputs (B, num_classes + 4): class logits, then a box (top, left, bottom, right) in pixels
(`cnnlab.metrics.boxes`), parameterised as a centre and a size, each a sigmoid times the image size, so that
every output is a valid box inside the image. Trained with `train.loss = "class_and_box"`.
"""

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.models import layers
from cnnlab.models import register


class BoxHead(nn.Module):
  """Features (B, F) -> class logits and an in-image box in pixels for images of spatial size `size_hw`."""
  num_classes: int
  size_hw: tuple[int, int]

  @nn.compact
  def __call__(self, h_BF: jax.Array) -> jax.Array:
    out = nn.Dense(self.num_classes + 4, name="head")(h_BF)
    logits, raw = out[:, :self.num_classes], out[:, self.num_classes:]
    size = jnp.asarray(self.size_hw, jnp.float32)
    centre, extent = nn.sigmoid(raw[:, :2]) * size, nn.sigmoid(raw[:, 2:]) * size
    return jnp.concatenate([logits, centre - extent / 2, centre + extent / 2], axis=-1)


@register("localiser")
class Localiser(nn.Module):
  """[3x3 conv -> ReLU -> 2x2 max pool] per conv stage, flatten, dense ReLU layers, then a `BoxHead`."""
  conv_features: Sequence[int] = (16, 32, 32)  # channels per conv stage; () gives an MLP
  hidden: Sequence[int] = (32,)                # dense widths after the flatten
  num_classes: int = 10
  conv: layers.ModuleDef = nn.Conv
  pool_fn: Callable = layers.pool  # (x, kind) -> pooled x

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool = False) -> jax.Array:
    del train
    size_hw = tuple(x_BHWC.shape[1:3])
    x = x_BHWC
    for i, width in enumerate(self.conv_features):
      x = self.pool_fn(nn.relu(self.conv(width, (3, 3), padding="SAME", name=f"conv{i}")(x)), "max")
    x = layers.flatten(x)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
    return BoxHead(self.num_classes, size_hw, name="box_head")(x)


register("localiser_mlp", functools.partial(Localiser, conv_features=(), hidden=(30,)))  # ~ the CNN's size on 32x32
