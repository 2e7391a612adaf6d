"""Multi-layer perceptron: no locality, no weight sharing."""

from typing import Sequence

import flax.linen as nn

from cnnlab.models import layers
from cnnlab.models import register


@register("mlp")
class MLP(nn.Module):
  """Flattens the input, then Dense -> activation for each hidden width, then a linear classifier."""
  hidden: Sequence[int] = (256, 256)
  num_classes: int = 10
  act: str = "relu"

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = layers.flatten(x)
    for i, width in enumerate(self.hidden):
      x = layers.activation(self.act)(nn.Dense(width, name=f"dense{i}")(x))
    return nn.Dense(self.num_classes, name="head")(x)
