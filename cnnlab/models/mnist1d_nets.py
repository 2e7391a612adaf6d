"""The four baselines of MNIST-1D (Greydanus & Kobak, 2020), for (B, 40, 1) signals.

Paper parameter counts: logistic 410, MLP 15,210, CNN 5,210, GRU 5,134. Our GRU has 5,110:
PyTorch's GRU has two bias vectors per gate (input and recurrent), flax's GRUCell one (plus the
recurrent bias of the candidate gate), 24 fewer parameters for hidden size 6, both directions.
"""

import flax.linen as nn

from cnnlab.models import layers
from cnnlab.models import register


@register("mnist1d_logistic")
class Logistic(nn.Module):
  """Linear classifier on the flattened signal."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    return nn.Dense(self.num_classes, name="head")(layers.flatten(x))


@register("mnist1d_mlp")
class ResidualMLP(nn.Module):
  """40 -> 100 -> 100 (residual) -> 10, as in the paper."""
  hidden: int = 100
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    h = nn.relu(nn.Dense(self.hidden, name="dense0")(layers.flatten(x)))
    h = h + nn.relu(nn.Dense(self.hidden, name="dense1")(h))
    return nn.Dense(self.num_classes, name="head")(h)


@register("mnist1d_cnn")
class PaperCNN(nn.Module):
  """Conv1d(1,25,k5,s2,p1) -> Conv1d(25,25,k3,s2,p1) x2 -> Linear(125,10), ReLU after each conv."""
  channels: int = 25
  num_classes: int = 10
  conv: layers.ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    for i, k in enumerate((5, 3, 3)):
      x = nn.relu(self.conv(self.channels, (k,), strides=(2,), padding=[(1, 1)], name=f"conv{i}")(x))
    return nn.Dense(self.num_classes, name="head")(layers.flatten(x))


@register("mnist1d_gru")
class BiGRU(nn.Module):
  """Bidirectional GRU (hidden 6) over the 40 positions; every step's state feeds a linear classifier."""
  hidden: int = 6
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    # nn.RNN is a lax.scan over time: one compiled step body instead of 40 unrolled ones.
    h = nn.Bidirectional(nn.RNN(nn.GRUCell(self.hidden), name="fwd"), nn.RNN(nn.GRUCell(self.hidden), name="bwd"),
                         name="gru")(x)
    return nn.Dense(self.num_classes, name="head")(layers.flatten(h))
