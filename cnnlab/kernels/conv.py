"""`lax.conv_general_dilated` rewritten where XLA:CPU is slow, and `Conv`: `nn.Conv` computed with it (same numbers)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.kernels import conv_grads, seeded

# Up to this many input channels, convolution as shifted slices + one matmul beats XLA:CPU's conv severalfold
# (forward + backward). With more channels it is about even per layer, and a threshold of 16 made the LeNet-like
# and weight_sharing train steps slower. Results are identical up to float rounding.
SLICED_CONV_MAX_IN_CHANNELS = 3
MAX_SPLIT_GROUPS = 4  # grouped convs with up to this many groups run as one conv per group


def as_tuple(v, d: int) -> tuple[int, ...]:
  """An int, a sequence or None (meaning 1) as a d-tuple."""
  if v is None:
    return (1,) * d
  return (v,) * d if isinstance(v, int) else tuple(v)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
  """`lax.conv_general_dilated` for flax's channels-last layout, rewritten where XLA:CPU is slow (same numbers).

  Few input channels: slices + one matmul. 2-4 feature groups: one conv per group. Unpadded stride 1:
  XLA's forward conv, the backward pass as matmuls (`conv_grads`). Anything else: lax itself. Wherever XLA's
  conv runs, a vmap over seeds (per-seed weights) runs one conv per seed (`seeded`), not a grouped conv.
  """
  d = lhs.ndim - 2
  channels_last = (dimension_numbers is not None and tuple(dimension_numbers.lhs_spec) == (0, d + 1, *range(1, d + 1))
                   and tuple(dimension_numbers.rhs_spec) == (d + 1, d, *range(d)))
  fast = channels_last and batch_group_count == 1
  if fast and 1 < feature_group_count <= MAX_SPLIT_GROUPS:
    # One conv per group: XLA:CPU's grouped conv ran several times slower than its groups as separate convs
    # (AlexNet's conv2, 7x7x96 -> 256 in 2 groups, forward + backward). The same sums.
    return jnp.concatenate([
        conv_general_dilated(x, w, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, 1, 1,
                             precision, preferred_element_type)
        for x, w in zip(jnp.split(lhs, feature_group_count, -1), jnp.split(rhs, feature_group_count, -1))], -1)
  fast = fast and feature_group_count == 1
  simple = (fast and (lhs_dilation is None or all(v == 1 for v in lhs_dilation))
            and lhs.shape[-1] <= SLICED_CONV_MAX_IN_CHANNELS)
  if (fast and not simple and preferred_element_type is None
      and all(v == 1 for v in as_tuple(window_strides, d) + as_tuple(lhs_dilation, d) + as_tuple(rhs_dilation, d))
      and all(lo == hi == 0 for lo, hi in (jax.lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:d], (1,) * d, padding)
                                           if isinstance(padding, str) else padding))):
    return conv_grads.conv(lhs, rhs, precision)  # unpadded, stride 1: backward pass as matmuls
  if not simple:  # lax itself (one conv per seed when vmapped over seeds: `seeded`)
    return seeded.lax_conv(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                           feature_group_count, batch_group_count, precision, preferred_element_type)
  return _sliced_conv(lhs, rhs, window_strides, padding, rhs_dilation, precision, preferred_element_type)


def _sliced_conv(lhs, rhs, window_strides, padding, rhs_dilation, precision, preferred_element_type) -> jax.Array:
  """Channels-last conv (no input dilation, one group) as shifted slices of the padded input + one matmul."""
  d = lhs.ndim - 2
  kernel_size = rhs.shape[:d]
  strides = as_tuple(window_strides, d)
  dilation = as_tuple(rhs_dilation, d)
  eff = [(k - 1) * r + 1 for k, r in zip(kernel_size, dilation)]
  pads = jax.lax.padtype_to_pads(lhs.shape[1:-1], eff, strides, padding) if isinstance(padding, str) else padding
  x = jax.lax.pad(lhs, jnp.zeros((), lhs.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
  out = [(x.shape[1 + i] - eff[i]) // strides[i] + 1 for i in range(d)]
  c, n = lhs.shape[-1], lhs.shape[0]
  # Channels-first patches: each kernel tap's slice is a contiguous (N * out) row, and the product is
  # (O, C*K) @ (C*K, N*out), a long matmul; channels-last patches (N*out, K*C) @ (K*C, O) with a few
  # output channels ran several times slower forward and backward on XLA:CPU.
  x_cf = jnp.moveaxis(x, -1, 0).reshape(c * n, *x.shape[1:-1])                        # (C*N, *spatial)
  # Built one spatial dim at a time (5 row slices, then 5 column slices of those for a 5x5 kernel): as one
  # stack of 25 two-dim slices XLA:CPU ran 25 separate slice copies and a concatenate, several times slower.
  patches = _stacked_windows(x_cf, kernel_size, dilation, out, strides).reshape(-1, n * int(np.prod(out)))
  w = rhs.reshape(-1, rhs.shape[-1])                                                   # (K*C, O), rows (k, c)
  y = jnp.einsum("ko,kp->op", w, patches, precision=precision, preferred_element_type=preferred_element_type)
  return jnp.moveaxis(y.reshape(-1, n, *out), 0, -1)


def _stacked_windows(x, kernel_size, dilation, out, strides) -> jax.Array:
  """(*kernel_size, B, *out): every kernel offset's strided slice of x (B, *spatial), built one dim at a time."""
  for i, (k, r, n, s) in enumerate(zip(kernel_size, dilation, out, strides)):
    before = (slice(None),) * (2 * i + 1)  # spatial dim i sits after i kernel axes, the batch axis, i spatial dims
    x = jnp.stack([x[(*before, slice(o * r, o * r + (n - 1) * s + 1, s))] for o in range(k)], axis=i)
  return x


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
