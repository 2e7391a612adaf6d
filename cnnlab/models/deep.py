"""Deep plain / normalised / residual MLPs and CNNs: the depth_and_gradients experiment's models.

Both are stem -> `depth` blocks -> head, so the two families differ only in the layer of a block
(Dense vs a 3x3 stride-1 Conv with a global-average-pool head). A block is
  plain:    h = act(norm(layer(h)))
  residual: h = h + act(norm(layer(h)))
with norm = BatchNorm (momentum 0.9) or identity. The blocks are one `nn.scan` named "blocks": every
parameter has a leading axis of size `depth`, so per-block gradient norms are norms along that axis.
`kernel_init` draws the stem's and blocks' weights (the layers a ReLU follows; the linear head keeps LeCun):
'lecun' (flax's default, variance 1/fan-in), 'he' (2/fan-in, He et al. 2015), or 'orthogonal' (gain sqrt 2:
orthogonal Dense kernels, delta-orthogonal conv kernels, Xiao et al. 2018).
"""

import math

import flax.linen as nn

from cnnlab.models import layers
from cnnlab.errors import UserError
from cnnlab.models import register

NORMS = ("none", "batch")
INITS = ("lecun", "he", "orthogonal")


def kernel_initializer(name: str, kind: str) -> nn.initializers.Initializer:
  """The initializer `name` (one of INITS) for a 'dense' or 'conv' layer followed by a ReLU."""
  if name == "lecun":
    return nn.linear.default_kernel_init  # what nn.Dense and nn.Conv draw by default
  if name == "he":
    return nn.initializers.he_normal()
  if name == "orthogonal":  # gain sqrt 2 for ReLU; a conv's kernel is zero outside its centre tap
    return (nn.initializers.orthogonal if kind == "dense" else nn.initializers.delta_orthogonal)(math.sqrt(2))
  raise UserError(f"unknown kernel_init {name!r}; use one of {INITS}")


class _Block(nn.Module):
  """One block, written for `nn.scan`: (h, None) -> (h, None)."""
  kind: str       # 'dense' | 'conv' (3x3, stride 1, SAME)
  width: int
  norm: str
  residual: bool
  train: bool
  conv: layers.ModuleDef = nn.Conv
  kernel_init: str = "lecun"  # one of INITS

  @nn.compact
  def __call__(self, h, _):
    init = kernel_initializer(self.kernel_init, self.kind)
    if self.kind == "dense":
      y = nn.Dense(self.width, kernel_init=init, name="layer")(h)
    else:
      y = self.conv(self.width, (3,) * layers.spatial_dims(h), padding="SAME", kernel_init=init, name="layer")(h)
    if self.norm == "batch":
      y = nn.BatchNorm(use_running_average=not self.train, momentum=0.9, name="bn")(y)
    elif self.norm != "none":
      raise UserError(f"unknown norm {self.norm!r}; use one of {NORMS}")
    y = nn.relu(y)
    return (h + y if self.residual else y), None


def _blocks(kind: str, width: int, norm: str, residual: bool, train: bool, depth: int,
            conv: layers.ModuleDef = nn.Conv, kernel_init: str = "lecun") -> nn.Module:
  # nn.scan stacks the blocks' parameters on a leading axis of size `depth`: one compiled block body,
  # so compile time does not grow with depth (an unrolled 32-block CNN took minutes to compile here).
  scanned = nn.scan(_Block, variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True},
                    length=depth)
  return scanned(kind, width, norm, residual, train, conv, kernel_init, name="blocks")


@register("deep_mlp")
class DeepMLP(nn.Module):
  """Dense stem, `depth` Dense blocks of `width`, linear head."""
  depth: int = 8
  width: int = 64
  norm: str = "none"
  residual: bool = False
  num_classes: int = 10
  kernel_init: str = "lecun"  # the stem's and blocks' weights: one of INITS

  @nn.compact
  def __call__(self, x, train: bool = False):
    init = kernel_initializer(self.kernel_init, "dense")
    h = nn.relu(nn.Dense(self.width, kernel_init=init, name="stem")(layers.flatten(x)))
    h, _ = _blocks("dense", self.width, self.norm, self.residual, train, self.depth,
                   kernel_init=self.kernel_init)(h, None)
    return nn.Dense(self.num_classes, name="head")(h)


@register("deep_cnn")
class DeepCNN(nn.Module):
  """3x3 conv stem, `depth` 3x3 conv blocks of `width` channels (no downsampling), GAP, linear head."""
  depth: int = 8
  width: int = 16
  norm: str = "none"
  residual: bool = False
  num_classes: int = 10
  conv: layers.ModuleDef = nn.Conv        # the stem's conv
  block_conv: layers.ModuleDef = nn.Conv  # the blocks' conv, run inside nn.scan
  kernel_init: str = "lecun"              # the stem's and blocks' weights: one of INITS

  @nn.compact
  def __call__(self, x, train: bool = False):
    d = layers.spatial_dims(x)
    init = kernel_initializer(self.kernel_init, "conv")
    h = nn.relu(self.conv(self.width, (3,) * d, padding="SAME", kernel_init=init, name="stem")(x))
    h, _ = _blocks("conv", self.width, self.norm, self.residual, train, self.depth, self.block_conv,
                   self.kernel_init)(h, None)
    return nn.Dense(self.num_classes, name="head")(layers.global_avg_pool(h))
