"""Deep plain / normalised / residual MLPs and CNNs: the depth_and_gradients experiment's models.

Both are stem -> `depth` blocks -> head, so the two families differ only in the layer of a block
(Dense vs a 3x3 stride-1 Conv with a global-average-pool head). A block is
  plain:    h = act(norm(layer(h)))
  residual: h = h + act(norm(layer(h)))
with norm = BatchNorm (momentum 0.9) or identity. Blocks are named block0..block{depth-1}, so per-layer
gradient norms can be read off the gradient tree.
"""

import flax.linen as nn

from cnnlab import layers
from cnnlab.errors import UserError
from cnnlab.models import register

NORMS = ("none", "batch")


class _Block(nn.Module):
  kind: str       # 'dense' | 'conv' (3x3, stride 1, SAME)
  width: int
  norm: str
  residual: bool

  @nn.compact
  def __call__(self, h, train: bool):
    if self.kind == "dense":
      y = nn.Dense(self.width, name="layer")(h)
    else:
      y = nn.Conv(self.width, (3,) * layers.spatial_dims(h), padding="SAME", name="layer")(h)
    if self.norm == "batch":
      y = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(y)
    elif self.norm != "none":
      raise UserError(f"unknown norm {self.norm!r}; use one of {NORMS}")
    y = nn.relu(y)
    return h + y if self.residual else y


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
    for i in range(self.depth):
      h = _Block("dense", self.width, self.norm, self.residual, name=f"block{i}")(h, train)
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
    for i in range(self.depth):
      h = _Block("conv", self.width, self.norm, self.residual, name=f"block{i}")(h, train)
    return nn.Dense(self.num_classes, name="head")(layers.global_avg_pool(h))
