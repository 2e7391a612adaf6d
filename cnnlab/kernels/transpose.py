"""`ConvTranspose`: `nn.ConvTranspose` (same parameters, same outputs) computed phase by phase."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.kernels.conv import as_tuple, conv_general_dilated
from cnnlab.ops import conv_ops



def conv_transpose(x, kernel, strides, padding, precision=None) -> jax.Array:
  """`lax.conv_transpose` (channels-last, kernel not flipped, explicit padding) as one stride-1 conv per phase.

  A stride-s transposed conv is a conv over the input with s - 1 zeros inserted between pixels. The output
  pixels at one position mod s (a phase) meet only every s-th kernel tap, so each of the s^d phases is an
  ordinary conv of the undilated input with a sub-kernel, and the phases interleave: s^d times fewer
  multiply-adds, none of them with zeros. On XLA:CPU the input-dilated conv's kernel gradient was the
  slowest op of the segmentation step.
  """
  d = x.ndim - 2
  strides = as_tuple(strides, d)
  dn = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, conv_ops.dimension_numbers(d))
  geometry = [_phases(x.shape[1 + i], kernel.shape[i], strides[i], padding[i]) for i in range(d)]
  n_max = [max(p[1] for p in g) for g in geometry]
  phases = []
  for combo in itertools.product(*geometry):  # one (start tap, length, (lo, hi)) per spatial dim
    lengths = [p[1] for p in combo]
    sub = kernel[tuple(slice(p[0], None, s) for p, s in zip(combo, strides))]
    if min(lengths) > 0 and min(sub.shape[:d]) > 0:
      y = conv_general_dilated(x, sub, (1,) * d, [p[2] for p in combo], dimension_numbers=dn, precision=precision)
    else:  # no output pixel or no kernel tap in this phase
      y = jnp.zeros((x.shape[0], *lengths, kernel.shape[-1]), jnp.result_type(x, kernel))
    phases.append(jnp.pad(y, [(0, 0), *((0, m - n) for m, n in zip(n_max, lengths)), (0, 0)]))
  y = jnp.stack(phases).reshape(*strides, x.shape[0], *n_max, kernel.shape[-1])     # (*s, N, *n_max, O)
  y = jnp.transpose(y, (d, *(i for j in range(d) for i in (d + 1 + j, j)), 2 * d + 1))  # (N, n0, s0, n1, s1, .., O)
  y = y.reshape(x.shape[0], *(m * s for m, s in zip(n_max, strides)), kernel.shape[-1])
  out = [(x.shape[1 + i] - 1) * strides[i] + 1 + sum(padding[i]) - kernel.shape[i] + 1 for i in range(d)]
  return y[(slice(None), *(slice(0, o) for o in out))]


def _phases(size: int, k: int, s: int, pad: tuple[int, int]) -> list[tuple[int, int, tuple[int, int]]]:
  """Per output phase r of a 1-D transposed conv: (first kernel tap, output length, (lo, hi) padding of its conv)."""
  lo, hi = pad
  out = (size - 1) * s + 1 + lo + hi - k + 1
  result = []
  for r in range(s):
    n = len(range(r, max(out, 0), s))
    t0 = (lo - r) % s                      # taps t0, t0 + s, ... reach input pixels for outputs r, r + s, ...
    taps = len(range(t0, k, s))
    a = -((r + t0 - lo) // s)              # exact division: r + t0 - lo is a multiple of s
    result.append((t0, n, (a, n - 1 + taps - size - a)))
  return result


class ConvTranspose(nn.ConvTranspose):
  """`nn.ConvTranspose` (same parameters, same outputs) computed phase by phase; see `conv_transpose`.

  Masks, a transposed kernel, kernel dilation and string, circular or negative padding use flax's code path.
  """

  @nn.compact
  def __call__(self, inputs):
    d = inputs.ndim - 2
    kernel_size = as_tuple(self.kernel_size, d)
    padding = [(self.padding, self.padding)] * d if isinstance(self.padding, int) else self.padding
    plain = (self.mask is None and not self.transpose_kernel and as_tuple(self.kernel_dilation, d) == (1,) * d
             and 1 <= d <= 3 and not isinstance(padding, str) and len(padding) == d
             and len(kernel_size) == d)
    if not plain:
      return super().__call__(inputs)
    padding = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
    if min(min(p) for p in padding) < 0:
      return super().__call__(inputs)
    kernel = self.param("kernel", self.kernel_init, (*kernel_size, inputs.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = conv_transpose(inputs, kernel, self.strides, padding, self.precision)
    return y + bias if bias is not None else y
