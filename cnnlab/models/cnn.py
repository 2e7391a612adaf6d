"""A configurable CNN; swapping its conv for `nn.ConvLocal` gives a locally-connected net.

`LCN` has the same receptive fields, shapes and depth as `CNN` but a separate filter at every
position (no weight sharing), so CNN vs LCN isolates weight sharing and LCN vs MLP isolates locality.
Works for 1-D (B, L, C) and 2-D (B, H, W, C) inputs.
"""

import functools
from typing import Callable, Sequence

import flax.linen as nn

from cnnlab.models import layers
from cnnlab.errors import UserError
from cnnlab.models import register


@register("cnn")
class CNN(nn.Module):
  """[conv(k) -> act -> pool] per stage, then a flatten or global-average-pool head."""
  features: Sequence[int] = (16, 32)
  kernel_size: int = 3
  strides: int = 1          # conv stride of every stage (2 = "strided conv" downsampling)
  padding: str = "SAME"
  pool: str = "max"         # 'max' | 'avg' | 'none', 2x2 window, stride 2, after each stage
  head: str = "flatten"     # 'flatten' | 'gap' (global average pooling)
  hidden: Sequence[int] = ()  # dense widths between the conv stack and the classifier
  num_classes: int = 10
  act: str = "relu"
  conv: layers.ModuleDef = nn.Conv  # nn.Conv (shared weights) or nn.ConvLocal (unshared)
  pool_fn: Callable = layers.pool   # (x, kind) -> pooled x

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    d = layers.spatial_dims(x)
    for i, width in enumerate(self.features):
      if any(s < self.kernel_size for s in x.shape[1:-1]):
        raise UserError(f"kernel size {self.kernel_size} is larger than the {'x'.join(map(str, x.shape[1:-1]))} "
                        f"input of conv stage {i}; use a smaller kernel or fewer stages")
      x = self.conv(width, (self.kernel_size,) * d, strides=(self.strides,) * d, padding=self.padding,
                    name=f"conv{i}")(x)
      x = layers.activation(self.act)(x)
      x = self.pool_fn(x, self.pool)
    x = layers.head_features(x, self.head)
    for i, width in enumerate(self.hidden):
      x = layers.activation(self.act)(nn.Dense(width, name=f"dense{i}")(x))
    return nn.Dense(self.num_classes, name="head")(x)


LCN = register("lcn", functools.partial(CNN, conv=nn.ConvLocal))
