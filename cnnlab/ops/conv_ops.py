"""Three implementations of N-d convolution (channels-last): direct, im2col and `lax`.

All three take `lax.conv_general_dilated`'s arguments for NHWC inputs and HWIO kernels (any number
of spatial axes: NWC/WIO, NHWC/HWIO, NDHWC/DHWIO) and compute the same cross-correlation:

  out[n, *o, g*Og + f] = sum_{*t, c} x_pad[n, *(o*s + t*d), g*Cg + c] * w[*t, c, g*Og + f]

- `conv_direct`: the definition, in float64 numpy, one dot product per output position (a slow
  reference that shares no code with XLA);
- `conv_im2col`: gathers every receptive field into a row ("im2col") and does one matmul per group;
  jittable jnp, a drop-in for `conv_lax`;
- `conv_lax`: `lax.conv_general_dilated` with channels-last dimension numbers.

CNN "convolutions" are cross-correlations; `true_convolution` flips the kernel to get the
convolution of signal processing (`scipy.signal.convolve`).
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnlab.ops import conv_arithmetic
from cnnlab.ops.conv_arithmetic import GeometryError

PaddingArg = str | Sequence[tuple[int, int]]


def dimension_numbers(num_spatial: int) -> tuple[str, str, str]:
  """Channels-last `lax` dimension numbers, e.g. ('NHWC', 'HWIO', 'NHWC') for 2-D."""
  if not 1 <= num_spatial <= 3:
    raise GeometryError(f"1 to 3 spatial axes are supported, got {num_spatial}")
  sp = "DHW"[-num_spatial:]
  return f"N{sp}C", f"{sp}IO", f"N{sp}C"


def _geometry(x_shape, w_shape, window_strides, padding, lhs_dilation, rhs_dilation, feature_group_count):
  """Validated strides, dilations and explicit (lo, hi) pads, as `lax.conv_general_dilated` reads them."""
  n = len(x_shape) - 2
  if len(w_shape) != n + 2:
    raise GeometryError(f"input {tuple(x_shape)} has {n} spatial axes but kernel {tuple(w_shape)} has "
                        f"{len(w_shape) - 2}")
  strides = tuple(window_strides or (1,) * n)
  lhs_d = tuple(lhs_dilation or (1,) * n)
  rhs_d = tuple(rhs_dilation or (1,) * n)
  c, (ci, co) = x_shape[-1], w_shape[-2:]
  g = feature_group_count
  if c % g or co % g or ci * g != c:
    raise GeometryError(f"{c} input channels, kernel {tuple(w_shape)} and {g} groups do not fit: need "
                        f"in_channels = groups * kernel_in and out_channels divisible by groups")
  dilated = [(i - 1) * ld + 1 for i, ld in zip(x_shape[1:-1], lhs_d)]
  if isinstance(padding, str):
    if padding.upper() not in ("VALID", "SAME"):
      raise GeometryError(f"padding must be 'VALID', 'SAME' or (lo, hi) pairs, got {padding!r}")
    if any(ld != 1 for ld in lhs_d):  # lax refuses this too: the intended transposed padding is ambiguous.
      raise GeometryError("string padding with lhs_dilation is ambiguous; give explicit (lo, hi) pairs")
    pads = [conv_arithmetic.conv_padding(padding, i, k, s, d)
            for i, k, s, d in zip(dilated, w_shape[:-2], strides, rhs_d)]
  else:
    pads = [tuple(int(q) for q in pair) for pair in padding]
  out = []
  for i, (lo, hi), k, s, d in zip(dilated, pads, w_shape[:-2], strides, rhs_d):
    span = i + lo + hi - conv_arithmetic.effective_kernel_size(k, d)
    if span < 0:
      raise GeometryError(f"kernel {k} (dilation {d}) is larger than the padded input {i} + {lo} + {hi}")
    out.append(span // s + 1)
  return strides, lhs_d, rhs_d, pads, tuple(out)


def conv_lax(x: jax.Array, w: jax.Array, window_strides: Sequence[int] | None = None, padding: PaddingArg = "VALID",
             lhs_dilation: Sequence[int] | None = None, rhs_dilation: Sequence[int] | None = None,
             feature_group_count: int = 1, precision=None) -> jax.Array:
  """`lax.conv_general_dilated` for channels-last inputs and (*spatial, in, out) kernels."""
  n = x.ndim - 2
  return lax.conv_general_dilated(x, w, window_strides or (1,) * n, padding, lhs_dilation=lhs_dilation,
                                  rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers(n),
                                  feature_group_count=feature_group_count, precision=precision)


def im2col(x: jax.Array, kernel_shape: Sequence[int], window_strides: Sequence[int] | None = None,
           padding: PaddingArg = "VALID", lhs_dilation: Sequence[int] | None = None,
           rhs_dilation: Sequence[int] | None = None) -> jax.Array:
  """Every receptive field as a row: (N, *spatial, C) -> (N, *out, prod(kernel_shape), C)."""
  w_shape = (*kernel_shape, x.shape[-1], 1)
  strides, lhs_d, rhs_d, pads, out = _geometry(x.shape, w_shape, window_strides, padding, lhs_dilation,
                                               rhs_dilation, 1)
  zero = jnp.zeros((), x.dtype)
  # lax.pad does the lhs dilation (interior padding) and negative (cropping) pads in one op.
  xp = lax.pad(x, zero, [(0, 0, 0), *[(lo, hi, ld - 1) for (lo, hi), ld in zip(pads, lhs_d)], (0, 0, 0)])
  # One gather with static indices: input row o*s + t*d of axis a feeds output o through tap t. (It compiles
  # and runs faster on CPU than one strided slice per kernel tap.)
  n = len(out)
  index = []
  for a, (o, k, s, d) in enumerate(zip(out, kernel_shape, strides, rhs_d)):
    shape = [1] * (2 * n)
    shape[a], shape[n + a] = o, k
    index.append((np.arange(o)[:, None] * s + np.arange(k)[None, :] * d).reshape(shape))
  cols = xp[(slice(None), *index, slice(None))]  # (N, *out, *kernel_shape, C)
  return cols.reshape(x.shape[0], *out, -1, x.shape[-1])


def conv_im2col(x: jax.Array, w: jax.Array, window_strides: Sequence[int] | None = None,
                padding: PaddingArg = "VALID", lhs_dilation: Sequence[int] | None = None,
                rhs_dilation: Sequence[int] | None = None, feature_group_count: int = 1,
                precision=None) -> jax.Array:
  """Convolution as im2col patches times a (prod(k) * C_in/groups, C_out/groups) matrix per group."""
  g = feature_group_count
  _geometry(x.shape, w.shape, window_strides, padding, lhs_dilation, rhs_dilation, g)
  patches = im2col(x, w.shape[:-2], window_strides, padding, lhs_dilation, rhs_dilation)
  n, out, kk, c = patches.shape[0], patches.shape[1:-2], patches.shape[-2], patches.shape[-1]
  cg, og = c // g, w.shape[-1] // g
  rows = patches.reshape(-1, kk, g, cg).transpose(2, 0, 1, 3).reshape(g, -1, kk * cg)  # (G, N*out, K*Cg)
  mat = w.reshape(kk, cg, g, og).transpose(2, 0, 1, 3).reshape(g, kk * cg, og)         # (G, K*Cg, Og)
  y = jnp.matmul(rows, mat, precision=precision)                                      # (G, N*out, Og)
  return y.transpose(1, 0, 2).reshape(n, *out, g * og)


def conv_direct(x: np.ndarray, w: np.ndarray, window_strides: Sequence[int] | None = None,
                padding: PaddingArg = "VALID", lhs_dilation: Sequence[int] | None = None,
                rhs_dilation: Sequence[int] | None = None, feature_group_count: int = 1) -> np.ndarray:
  """The definition in float64 numpy: at each output position, a dot product of a window with each filter."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  g = feature_group_count
  strides, lhs_d, rhs_d, pads, out = _geometry(x.shape, w.shape, window_strides, padding, lhs_dilation,
                                               rhs_dilation, g)
  dil = np.zeros((x.shape[0], *[(i - 1) * ld + 1 for i, ld in zip(x.shape[1:-1], lhs_d)], x.shape[-1]))
  dil[(slice(None), *[slice(None, None, ld) for ld in lhs_d], slice(None))] = x
  # Pad the positive part, then crop the negative part.
  xp = np.pad(dil, [(0, 0), *[(max(lo, 0), max(hi, 0)) for lo, hi in pads], (0, 0)])
  xp = xp[(slice(None), *[slice(max(-lo, 0), xp.shape[a + 1] - max(-hi, 0)) for a, (lo, hi) in enumerate(pads)])]
  k = w.shape[:-2]
  cg, og = w.shape[-2], w.shape[-1] // g
  filters = w.reshape(-1, cg, g, og)  # (K, Cg, G, Og)
  y = np.zeros((x.shape[0], *out, g, og))
  for pos in np.ndindex(*out):
    window = xp[(slice(None), *[slice(o * s, o * s + (kt - 1) * d + 1, d)
                                for o, s, kt, d in zip(pos, strides, k, rhs_d)])]
    y[(slice(None), *pos)] = np.einsum("nkgc,kcgo->ngo", window.reshape(x.shape[0], -1, g, cg), filters)
  return y.reshape(x.shape[0], *out, g * og)


def flip_kernel(w: jax.Array) -> jax.Array:
  """Reverses a (*spatial, in, out) kernel along every spatial axis."""
  return w[tuple(slice(None, None, -1) for _ in range(w.ndim - 2))]


def true_convolution(x: jax.Array, w: jax.Array, **conv_kwargs) -> jax.Array:
  """Convolution in the signal-processing sense: cross-correlation with the flipped kernel."""
  return conv_lax(x, flip_kernel(w), **conv_kwargs)
