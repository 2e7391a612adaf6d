"""LeNet-5 as in LeCun, Bottou, Bengio & Haffner (1998), 32x32 input.

Faithful where it changes the parameter count: C3's partial connection table (Table I),
trainable subsampling (one coefficient and one bias per map) and the RBF output layer. The
count is 60,840, the paper's "60,000 trainable parameters". Logits are the negative squared
distances to the RBF centres, so softmax cross-entropy trains it. 28x28 inputs are centred in a
32x32 field, as the paper did with MNIST.
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.models import register
from cnnlab.models import layers
from cnnlab.models.layers import ModuleDef

# C3_TABLE[j] lists the S2 maps that C3 map j sees (LeCun et al. 1998, Table I).
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


def squash(x):
  """The paper's scaled tanh, f(a) = 1.7159 tanh(2a/3)."""
  return 1.7159 * jnp.tanh(2.0 / 3.0 * x)


class Subsample(nn.Module):
  """Sum of each 2x2 block times a trainable per-map coefficient, plus a per-map bias."""
  pool_fn: Callable = layers.pool  # 2x2 average (a faster kernel can stand in)

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    coef = self.param("coef", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    return self.pool_fn(x, "avg") * 4.0 * coef + bias


class _GroupParams(nn.Module):
  """The kernel and bias of the C3 maps with one fan-in, laid out (and initialised) as a grouped `nn.Conv`'s."""
  fan_in: int
  maps: int
  kernel_size: int

  @nn.compact
  def __call__(self):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (self.kernel_size, self.kernel_size, self.fan_in, self.maps))
    return kernel, self.param("bias", nn.initializers.zeros, (self.maps,))


class SparseConv(nn.Module):
  """C3: output map j sums 5x5 convolutions of only the S2 maps that `table[j]` lists (Table I).

  That is one dense conv whose kernel is zero outside the table: the table's weights (grouped by fan-in, as
  grouped convs would hold them) are scattered into a dense (5, 5, 6, 16) kernel at every step. A grouped conv
  per fan-in computes the same sums, but XLA:CPU runs grouped convs' kernel gradients very slowly.
  """
  table: tuple = C3_TABLE
  kernel_size: int = 5
  conv_fn: Callable = jax.lax.conv_general_dilated  # the convolution op (a faster kernel can stand in)

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = jnp.zeros((k, k, x.shape[-1], len(self.table)), x.dtype)
    bias = jnp.zeros((len(self.table),), x.dtype)
    for fan_in in sorted({len(t) for t in self.table}):
      maps = [j for j, t in enumerate(self.table) if len(t) == fan_in]
      w, b = _GroupParams(fan_in, len(maps), k, name=f"fan_in{fan_in}")()
      rows = np.array([self.table[j] for j in maps]).T         # (fan_in, maps): input map of each weight slice
      cols = np.broadcast_to(np.array(maps), rows.shape)        # (fan_in, maps): its output map
      kernel = kernel.at[:, :, rows, cols].set(w)
      bias = bias.at[np.array(maps)].set(b)
    dn = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
    y = self.conv_fn(x, kernel, (1, 1), "VALID", dimension_numbers=dn)
    return y + bias


@register("lenet5")
class LeNet5(nn.Module):
  """C1-S2-C3-S4-C5-F6-RBF output."""
  num_classes: int = 10
  conv: ModuleDef = nn.Conv                          # C1 and C5
  conv_fn: Callable = jax.lax.conv_general_dilated   # C3's masked dense convolution
  pool_fn: Callable = layers.pool                    # S2 and S4's 2x2 averages

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    pad = [(max(0, (32 - s) // 2), max(0, 32 - s - (32 - s) // 2)) for s in x.shape[1:3]]
    x = jnp.pad(x, [(0, 0), *pad, (0, 0)])
    x = squash(self.conv(6, (5, 5), padding="VALID", name="C1")(x))
    x = squash(Subsample(pool_fn=self.pool_fn, name="S2")(x))
    x = squash(SparseConv(conv_fn=self.conv_fn, name="C3")(x))
    x = squash(Subsample(pool_fn=self.pool_fn, name="S4")(x))
    x = squash(self.conv(120, (5, 5), padding="VALID", name="C5")(x))
    x = squash(nn.Dense(84, name="F6")(x.reshape(x.shape[0], -1)))
    centres = self.param("RBF", nn.initializers.normal(1.0), (self.num_classes, 84))
    return -jnp.sum((x[:, None, :] - centres[None]) ** 2, axis=-1)
