"""AlexNet as in Krizhevsky, Sutskever & Hinton (2012), 227x227x3 input.

The paper trained on two GPUs: conv2, conv4 and conv5 see only the maps on their own GPU, which is
a grouped convolution with 2 groups (`feature_group_count=2`); conv3 and the dense layers see both.
That gives 60,965,224 parameters ("60 million"). The paper's figure says 224x224, but the
arithmetic of an 11x11, stride-4, unpadded conv needs 227 to give its 55x55 maps.
`alexnet_ungrouped` is the single-GPU variant (62,378,344 parameters).
"""

import functools
from typing import Callable

import flax.linen as nn

from cnnlab.models import layers
from cnnlab.models import register


@register("alexnet")
class AlexNet(nn.Module):
  """conv1-pool-conv2-pool-conv3-conv4-conv5-pool-fc6-fc7-fc8, ReLU, LRN after conv1/conv2, dropout in fc6/fc7."""
  num_classes: int = 1000
  groups: int = 2       # 2 = the paper's two-GPU split of conv2, conv4, conv5; 1 = ungrouped
  dropout: float = 0.5
  lrn: Callable | None = layers.lrn  # local response normalisation (size 5, k 2, alpha 1e-4, beta 0.75); None: none
  conv: layers.ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = self.lrn or (lambda y: y)
    pool = functools.partial(nn.max_pool, window_shape=(3, 3), strides=(2, 2))  # Overlapping pooling.
    conv = self.conv
    x = pool(norm(nn.relu(conv(96, (11, 11), strides=(4, 4), padding="VALID", name="conv1")(x))))
    x = pool(norm(nn.relu(conv(256, (5, 5), padding=2, feature_group_count=self.groups, name="conv2")(x))))
    x = nn.relu(conv(384, (3, 3), padding=1, name="conv3")(x))
    x = nn.relu(conv(384, (3, 3), padding=1, feature_group_count=self.groups, name="conv4")(x))
    x = pool(nn.relu(conv(256, (3, 3), padding=1, feature_group_count=self.groups, name="conv5")(x)))
    x = x.reshape(x.shape[0], -1)
    for name in ("fc6", "fc7"):
      x = nn.relu(nn.Dense(4096, name=name)(x))
      x = nn.Dropout(self.dropout, deterministic=not train, name=f"drop{name[2:]}")(x)
    return nn.Dense(self.num_classes, name="fc8")(x)


AlexNetUngrouped = register("alexnet_ungrouped", functools.partial(AlexNet, groups=1))
