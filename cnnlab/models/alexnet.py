"""AlexNet as in Krizhevsky, Sutskever & Hinton (2012), 227x227x3 input.

The paper trained on two GPUs: conv2, conv4 and conv5 see only the maps on their own GPU, which is
a grouped convolution with 2 groups (`feature_group_count=2`); conv3 and the dense layers see both.
That gives 60,965,224 parameters ("60 million"). The paper's figure says 224x224, but the
arithmetic of an 11x11, stride-4, unpadded conv needs 227 to give its 55x55 maps.
`alexnet_ungrouped` is the single-GPU variant (62,378,344 parameters).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.models import layers
from cnnlab.models import register


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def local_response_norm(x: jax.Array, size: int = 5, k: float = 2.0, alpha: float = 1e-4,
                        beta: float = 0.75) -> jax.Array:
  """The paper's LRN: x / (k + alpha * sum of x^2 over `size` adjacent maps)^beta.

  Its gradient is written out: autodiff's, fused by XLA:CPU into one loop, recomputed the two powers
  for every shifted copy of the window sum (~150 ms of a ~730 ms AlexNet step at 67x67, batch 32).
  """
  return _lrn(x, size, k, alpha, beta)[0]


def _lrn(x, size, k, alpha, beta):
  """LRN's output and the residuals of its gradient (the forward rule of the custom VJP)."""
  sq = jnp.pad(x * x, [(0, 0)] * (x.ndim - 1) + [(size // 2, (size - 1) // 2)])
  d = k + alpha * sum(sq[..., i:i + x.shape[-1]] for i in range(size))
  p = d ** beta
  return x / p, (x, d, p)


def _lrn_bwd(size, k, alpha, beta, res, g):
  """dx_i = g_i / p_i - 2 alpha beta x_i sum over the maps c whose window holds i of g_c y_c / d_c."""
  del k
  x, d, p = res
  t = g * (x / p) / d
  t = jnp.pad(t, [(0, 0)] * (x.ndim - 1) + [((size - 1) // 2, size // 2)])
  return (g / p - 2 * alpha * beta * x * sum(t[..., i:i + x.shape[-1]] for i in range(size)),)


local_response_norm.defvjp(_lrn, _lrn_bwd)


@register("alexnet")
class AlexNet(nn.Module):
  """conv1-pool-conv2-pool-conv3-conv4-conv5-pool-fc6-fc7-fc8, ReLU, LRN after conv1/conv2, dropout in fc6/fc7."""
  num_classes: int = 1000
  groups: int = 2       # 2 = the paper's two-GPU split of conv2, conv4, conv5; 1 = ungrouped
  dropout: float = 0.5
  lrn: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = local_response_norm if self.lrn else (lambda y: y)
    pool = functools.partial(nn.max_pool, window_shape=(3, 3), strides=(2, 2))  # Overlapping pooling.
    x = pool(norm(nn.relu(layers.Conv(96, (11, 11), strides=(4, 4), padding="VALID", name="conv1")(x))))
    x = pool(norm(nn.relu(layers.Conv(256, (5, 5), padding=2, feature_group_count=self.groups, name="conv2")(x))))
    x = nn.relu(layers.Conv(384, (3, 3), padding=1, name="conv3")(x))
    x = nn.relu(layers.Conv(384, (3, 3), padding=1, feature_group_count=self.groups, name="conv4")(x))
    x = pool(nn.relu(layers.Conv(256, (3, 3), padding=1, feature_group_count=self.groups, name="conv5")(x)))
    x = x.reshape(x.shape[0], -1)
    for name in ("fc6", "fc7"):
      x = nn.relu(nn.Dense(4096, name=name)(x))
      x = nn.Dropout(self.dropout, deterministic=not train, name=f"drop{name[2:]}")(x)
    return nn.Dense(self.num_classes, name="fc8")(x)


AlexNetUngrouped = register("alexnet_ungrouped", functools.partial(AlexNet, groups=1))
