"""Deep plain / normalised / residual MLPs and CNNs: the depth_and_gradients experiment's models.

Both are stem -> `depth` blocks -> head, so the two families differ only in the layer of a block
(Dense vs a 3x3 stride-1 Conv with a global-average-pool head). A block is
  plain:    h = act(norm(layer(h)))
  residual: h = h + act(norm(layer(h)))
with norm = BatchNorm (momentum 0.9) or identity. The blocks are one `nn.scan` named "blocks": every
parameter has a leading axis of size `depth`, so per-block gradient norms are norms along that axis.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.models import layers
from cnnlab.errors import UserError
from cnnlab.models import register

NORMS = ("none", "batch")


class _Block(nn.Module):
  """One block, written for `nn.scan`: (h, None) -> (h, None)."""
  kind: str       # 'dense' | 'conv' (3x3, stride 1, SAME)
  width: int
  norm: str
  residual: bool
  train: bool

  @nn.compact
  def __call__(self, h, _):
    if self.kind == "dense":
      y = nn.Dense(self.width, name="layer")(h)
    else:
      y = nn.Conv(self.width, (3,) * layers.spatial_dims(h), padding="SAME", conv_general_dilated=_sliced_conv,
                  name="layer")(h)
    if self.norm == "batch":
      y = nn.BatchNorm(use_running_average=not self.train, momentum=0.9, name="bn")(y)
    elif self.norm != "none":
      raise UserError(f"unknown norm {self.norm!r}; use one of {NORMS}")
    y = nn.relu(y)
    return (h + y if self.residual else y), None


def _sliced_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                 feature_group_count=1, batch_group_count=1, precision=None, preferred_element_type=None):
  """Stride-1 channels-last convolution as shifted slices + one matmul (same result as lax's).

  Inside `nn.scan` XLA:CPU's convolution (and its gradient) ran ~50x slower than this here
  (a 32-block 8x8x16 CNN: ~2 s per training step).
  """
  del window_strides, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, batch_group_count
  del preferred_element_type
  k = rhs.shape[:-2]
  pads = jax.lax.padtype_to_pads(lhs.shape[1:-1], k, (1,) * len(k), padding) if isinstance(padding, str) else padding
  return _patches_matmul(jnp.pad(lhs, [(0, 0), *pads, (0, 0)]), rhs, tuple(lhs.shape[1:-1]), precision)


@functools.partial(jax.checkpoint, static_argnums=(2, 3))
def _patches_matmul(x, rhs, out, precision):
  # Rematerialised: the backward pass rebuilds the patches from `x` instead of nn.scan stacking every block's
  # 9x larger patch tensor (zero-filling and writing that stack was ~half of a 32-block CNN's train step).
  k = rhs.shape[:-2]
  patches = jnp.concatenate([x[(slice(None), *(slice(o, o + n) for o, n in zip(off, out)))]
                             for off in np.ndindex(*k)], axis=-1)  # features ordered (*window, channel) as HWIO
  return jnp.einsum("n...k,ko->n...o", patches, rhs.reshape(-1, rhs.shape[-1]), precision=precision)


def _blocks(kind: str, width: int, norm: str, residual: bool, train: bool, depth: int) -> nn.Module:
  # nn.scan stacks the blocks' parameters on a leading axis of size `depth`: one compiled block body,
  # so compile time does not grow with depth (an unrolled 32-block CNN took minutes to compile here).
  scanned = nn.scan(_Block, variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True},
                    length=depth)
  return scanned(kind, width, norm, residual, train, name="blocks")


@register("deep_mlp")
class DeepMLP(nn.Module):
  """Dense stem, `depth` Dense blocks of `width`, linear head."""
  depth: int = 8
  width: int = 64
  norm: str = "none"
  residual: bool = False
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.Dense(self.width, name="stem")(layers.flatten(x)))
    h, _ = _blocks("dense", self.width, self.norm, self.residual, train, self.depth)(h, None)
    return nn.Dense(self.num_classes, name="head")(h)


@register("deep_cnn")
class DeepCNN(nn.Module):
  """3x3 conv stem, `depth` 3x3 conv blocks of `width` channels (no downsampling), GAP, linear head."""
  depth: int = 8
  width: int = 16
  norm: str = "none"
  residual: bool = False
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    d = layers.spatial_dims(x)
    h = nn.relu(layers.Conv(self.width, (3,) * d, padding="SAME", name="stem")(x))
    h, _ = _blocks("conv", self.width, self.norm, self.residual, train, self.depth)(h, None)
    return nn.Dense(self.num_classes, name="head")(layers.global_avg_pool(h))
