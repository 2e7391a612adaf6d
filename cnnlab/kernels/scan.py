"""`ScanConv`: `nn.Conv` for convs inside `nn.scan` (the deep nets' blocks), as slices + one rematerialised matmul."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.kernels.conv import as_tuple


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
  """Stride-1 channels-last convolution as shifted slices + one matmul (same result as lax's); else lax.

  Inside `nn.scan` XLA:CPU's convolution (and its gradient) ran dozens of times slower than this.
  """
  d = lhs.ndim - 2
  channels_last = (dimension_numbers is not None and tuple(dimension_numbers.lhs_spec) == (0, d + 1, *range(1, d + 1))
                   and tuple(dimension_numbers.rhs_spec) == (d + 1, d, *range(d)))
  ones = (1,) * d
  if not (channels_last and feature_group_count == batch_group_count == 1 and preferred_element_type is None
          and as_tuple(window_strides, d) == as_tuple(lhs_dilation, d) == as_tuple(rhs_dilation, d) == ones):
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count, precision,
                                        preferred_element_type)
  k = rhs.shape[:-2]
  pads = jax.lax.padtype_to_pads(lhs.shape[1:-1], k, ones, padding) if isinstance(padding, str) else padding
  out = tuple(s + lo + hi - n + 1 for s, (lo, hi), n in zip(lhs.shape[1:-1], pads, k))
  return _patches_matmul(jnp.pad(lhs, [(0, 0), *pads, (0, 0)]), rhs, out, precision)


@functools.partial(jax.checkpoint, static_argnums=(2, 3))
def _patches_matmul(x, rhs, out, precision):
  # Rematerialised: the backward pass rebuilds the patches from `x` instead of nn.scan stacking every block's
  # 9x larger patch tensor (zero-filling and writing that stack was a large part of a deep CNN's train step).
  k = rhs.shape[:-2]
  patches = jnp.concatenate([x[(slice(None), *(slice(o, o + n) for o, n in zip(off, out)))]
                             for off in np.ndindex(*k)], axis=-1)  # features ordered (*window, channel) as HWIO
  return jnp.einsum("n...k,ko->n...o", patches, rhs.reshape(-1, rhs.shape[-1]), precision=precision)


ScanConv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
