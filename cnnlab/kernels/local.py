"""`ConvLocal`: `nn.ConvLocal` (same parameters, same outputs) as shifted slices + one batched matmul."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.errors import UserError
from cnnlab.kernels.conv import as_tuple


class ConvLocal(nn.ConvLocal):
  """`nn.ConvLocal` (same parameters, same outputs) computed as shifted slices + one batched matmul.

  flax's version extracts patches with `conv_general_dilated_patches`, whose gradient is slow on
  XLA:CPU (several times slower forward + backward than this). Unusual configurations (input dilation,
  circular/reflect/causal padding, a mask) use flax's code path.
  """

  @nn.compact
  def __call__(self, inputs):
    d = inputs.ndim - 2
    kernel_size = tuple(self.kernel_size) if not isinstance(self.kernel_size, int) else (self.kernel_size,) * d
    strides = as_tuple(self.strides, d)
    dilation = as_tuple(self.kernel_dilation, d)
    plain = (self.mask is None and as_tuple(self.input_dilation, d) == (1,) * d and self.feature_group_count == 1
             and not (isinstance(self.padding, str) and self.padding.upper() in ("CIRCULAR", "REFLECT", "CAUSAL")))
    if not plain or len(kernel_size) != d:
      return super().__call__(inputs)
    eff = [(k - 1) * r + 1 for k, r in zip(kernel_size, dilation)]
    if isinstance(self.padding, str):
      pads = jax.lax.padtype_to_pads(inputs.shape[1:-1], eff, strides, self.padding)
    elif isinstance(self.padding, int):
      pads = [(self.padding, self.padding)] * d
    else:
      pads = [(p, p) if isinstance(p, int) else tuple(p) for p in self.padding]
    x = jnp.pad(inputs, [(0, 0), *pads, (0, 0)])
    out = [(x.shape[1 + i] - eff[i]) // strides[i] + 1 for i in range(d)]
    if min(out) < 1:
      raise UserError(f"kernel {kernel_size} (dilation {dilation}) is larger than the padded input {x.shape[1:-1]}")
    c = inputs.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (*out, int(np.prod(kernel_size)) * c, self.features),
                        self.param_dtype)
    bias = self.param("bias", self.bias_init, (*out, self.features), self.param_dtype) if self.use_bias else None
    x, kernel, bias = self.promote_dtype(x, kernel, bias, dtype=self.dtype)
    # Patch features ordered (channel, *window), as conv_general_dilated_patches orders them.
    patches = jnp.stack(_window_slices(x, kernel_size, dilation, out, strides), axis=-1).reshape(*x.shape[:1], *out, -1)
    y = jnp.einsum("n...k,...kf->n...f", patches, kernel, precision=self.precision)
    return y + bias if bias is not None else y


def _window_slices(x, kernel_size, dilation, out, strides) -> list[jax.Array]:
  """For each kernel offset, the (strided) slice of the padded input that offset multiplies."""
  slices = []
  for offset in np.ndindex(*kernel_size):
    idx = tuple(slice(o * r, o * r + (n - 1) * s + 1, s) for o, r, n, s in zip(offset, dilation, out, strides))
    slices.append(x[(slice(None), *idx)])
  return slices
