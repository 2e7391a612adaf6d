"""Fully-convolutional encoder-decoders for semantic segmentation: transposed-conv or resize upsampling, U-Net skips.

Encoder: per stage a 3x3 conv + activation (ReLU by default), with a 2x2 max pool before every stage but the
first (so a 32x32 input is seen at 32, 16, 8 with three stages). Decoder: per finer stage an upsampling by 2 —
a stride-2 transposed conv (`transposed`) or a fixed bilinear / nearest resize followed by a 3x3 conv
(`bilinear`, `nearest`; Odena et al. 2016) — then, for a U-Net (Ronneberger et al. 2015), concatenation
with the encoder map of that resolution, then a 3x3 conv + activation. A 1x1 conv gives per-pixel class logits.
With the default 3x3 kernels both upsamplers have the same parameters, so the variants differ in one choice.
"""

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax

from cnnlab.models import layers
from cnnlab.ops import conv_arithmetic
from cnnlab.errors import UserError
from cnnlab.models import register

UPSAMPLES = ("transposed", "bilinear", "nearest")


def upsampling_transpose_geometry(k: int, s: int) -> tuple[int, int]:
  """The padding p and output padding a for which a (k, s) transposed conv maps i positions to exactly s * i."""
  # o' = s(i - 1) + a + k - 2p = s * i  <=>  2p - a = k - s, with a in [0, s): the smallest such p.
  p = max(0, -(-(k - s) // 2))
  return p, 2 * p - (k - s)


class Upsample(nn.Module):
  """Doubles height and width: a stride-2 transposed conv, or a fixed resize then a 3x3 conv."""
  features: int
  method: str = "transposed"  # one of UPSAMPLES
  kernel_size: int = 3        # transposed-conv kernel (3 with stride 2: uneven overlap, Odena et al.'s artefact case)
  conv: layers.ModuleDef = nn.Conv
  conv_transpose: layers.ModuleDef = nn.ConvTranspose

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    if self.method == "transposed":
      p, a = upsampling_transpose_geometry(self.kernel_size, 2)
      pads = conv_arithmetic.conv_transpose_padding(self.kernel_size, p, a)
      return self.conv_transpose(self.features, (self.kernel_size,) * 2, strides=(2, 2), padding=(pads, pads),
                                 name="conv_transpose")(x_BHWC)
    if self.method not in UPSAMPLES:
      raise UserError(f"unknown upsampling {self.method!r}; use one of {UPSAMPLES}")
    b, h, w, c = x_BHWC.shape
    x = jax.image.resize(x_BHWC, (b, 2 * h, 2 * w, c), method=self.method)
    return self.conv(self.features, (3, 3), padding="SAME", name="conv")(x)


@register("segnet")
class SegNet(nn.Module):
  """Encoder-decoder giving (B, H, W, num_classes) logits; `skips=True` makes it a U-Net."""
  features: Sequence[int] = (8, 16, 32)   # channels per encoder stage; the decoder mirrors them (coarse to fine)
  upsample: str = "transposed"            # one of UPSAMPLES
  up_kernel: int = 3                      # kernel of the transposed conv
  skips: bool = False                     # U-Net: concatenate the encoder map of the same resolution
  num_classes: int = 11                   # background + 10 digits
  conv: layers.ModuleDef = nn.Conv
  conv_transpose: layers.ModuleDef = nn.ConvTranspose
  pool_fn: Callable = layers.pool         # (x, kind) -> pooled x
  activation: Callable = nn.relu          # after every 3x3 conv of encoder and decoder (e.g. a leaky ReLU)

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool = False) -> jax.Array:
    del train
    factor = 2 ** (len(self.features) - 1)
    if x_BHWC.ndim != 4 or any(s % factor for s in x_BHWC.shape[1:3]):
      raise UserError(f"a {len(self.features)}-stage encoder-decoder needs 2-D inputs whose sides divide by "
                      f"{factor}, got {x_BHWC.shape[1:-1]}")
    x, skips = x_BHWC, []
    for i, width in enumerate(self.features):
      if i:
        x = self.pool_fn(x, "max")
      x = self.activation(self.conv(width, (3, 3), padding="SAME", name=f"enc{i}")(x))
      skips.append(x)
    for i in reversed(range(len(self.features) - 1)):
      x = Upsample(self.features[i], self.upsample, self.up_kernel, self.conv, self.conv_transpose, name=f"up{i}")(x)
      if self.skips:
        x = jax.numpy.concatenate([x, skips[i]], axis=-1)
      x = self.activation(self.conv(self.features[i], (3, 3), padding="SAME", name=f"dec{i}")(x))
    return self.conv(self.num_classes, (1, 1), name="classifier")(x)


register("segnet_resize", functools.partial(SegNet, upsample="bilinear"))
register("unet", functools.partial(SegNet, skips=True))
