"""Output sizes of convolutions, pools and transposed convolutions (Dumoulin & Visin 2016).

One spatial axis at a time: input size i, kernel k, stride s, padding p, dilation d. A dilated
kernel covers k̂ = k + (k - 1)(d - 1) inputs, and a convolution outputs
    o = floor((i + p_lo + p_hi - k̂) / s) + 1
positions. Its transpose maps o' = s(i' - 1) + a + k̂ - 2p positions back, where a in [0, s) picks
one of the s input sizes that the direct convolution maps to the same output size. Pooling
follows the same arithmetic. Padding is an int (both sides), a (lo, hi) pair, or a name:
  'valid'        no padding;
  'same'         o = ceil(i / s), the extra pad (if any) on the high side, as `lax`/TF/Keras do;
  'half'         p = floor(k̂ / 2) on both sides (Dumoulin & Visin; o = i for odd k and s = 1);
  'full'         p = k̂ - 1 on both sides (every partial overlap; o = i + k̂ - 1 for s = 1).
"""

from typing import Sequence

from cnnlab.errors import UserError

Padding = int | tuple[int, int] | str
PADDING_NAMES = ("valid", "same", "half", "full")


class GeometryError(UserError, ValueError):
  """A convolution whose sizes cannot work, e.g. a kernel larger than the padded input."""


def _check_positive(**values: int) -> None:
  for name, v in values.items():
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      raise GeometryError(f"{name} must be a positive integer, got {v!r}")


def effective_kernel_size(k: int, d: int = 1) -> int:
  """Inputs a kernel of size k with dilation d spans: k̂ = k + (k - 1)(d - 1)."""
  _check_positive(k=k, d=d)
  return k + (k - 1) * (d - 1)


def conv_padding(padding: Padding, i: int, k: int, s: int = 1, d: int = 1) -> tuple[int, int]:
  """The (lo, hi) zero padding that `padding` means for one axis."""
  _check_positive(i=i, k=k, s=s, d=d)
  kk = effective_kernel_size(k, d)
  if isinstance(padding, str):
    mode = padding.lower()
    if mode == "valid":
      return 0, 0
    if mode == "same":
      total = max((-(-i // s) - 1) * s + kk - i, 0)
      return total // 2, total - total // 2
    if mode == "half":
      return kk // 2, kk // 2
    if mode == "full":
      return kk - 1, kk - 1
    raise GeometryError(f"unknown padding {padding!r}; use an int, a (lo, hi) pair or one of {PADDING_NAMES}")
  if isinstance(padding, int) and not isinstance(padding, bool):
    pads = (padding, padding)
  elif isinstance(padding, Sequence) and len(padding) == 2 and all(isinstance(q, int) for q in padding):
    pads = (int(padding[0]), int(padding[1]))
  else:
    raise GeometryError(f"padding must be an int, a (lo, hi) pair or one of {PADDING_NAMES}, got {padding!r}")
  if min(pads) < 0:
    raise GeometryError(f"padding must be >= 0, got {padding!r}")
  return pads


def conv_output_size(i: int, k: int, s: int = 1, p: Padding = 0, d: int = 1) -> int:
  """Output size of a convolution (or pool) along one axis: floor((i + p_lo + p_hi - k̂) / s) + 1."""
  lo, hi = conv_padding(p, i, k, s, d)
  kk = effective_kernel_size(k, d)
  if i + lo + hi < kk:
    raise GeometryError(f"kernel of size {k} (dilation {d}, spans {kk}) is larger than the padded input "
                        f"{i} + {lo} + {hi} = {i + lo + hi}")
  return (i + lo + hi - kk) // s + 1


def conv_output_shape(spatial: Sequence[int], k: Sequence[int], s: Sequence[int] | None = None,
                      p: Sequence[Padding] | str = "valid", d: Sequence[int] | None = None) -> tuple[int, ...]:
  """`conv_output_size` on each spatial axis."""
  n = len(spatial)
  s = s or (1,) * n
  d = d or (1,) * n
  p = (p,) * n if isinstance(p, str) else p
  if not len(k) == len(s) == len(p) == len(d) == n:
    raise GeometryError(f"{n} spatial axes but kernel {k}, strides {s}, padding {p}, dilation {d}")
  return tuple(conv_output_size(*args) for args in zip(spatial, k, s, p, d))


def transpose_extra(i: int, k: int, s: int = 1, p: int = 0, d: int = 1) -> int:
  """The a = (i + 2p - k̂) mod s for which the transpose of an (i, k, s, p, d) conv gives back size i."""
  conv_output_size(i, k, s, p, d)  # Validates the geometry.
  return (i + 2 * p - effective_kernel_size(k, d)) % s


def conv_transpose_output_size(i: int, k: int, s: int = 1, p: int = 0, a: int = 0, d: int = 1) -> int:
  """Output size of a transposed convolution along one axis: o' = s(i' - 1) + a + k̂ - 2p."""
  _check_positive(i=i, k=k, s=s, d=d)
  if not isinstance(p, int) or p < 0:
    raise GeometryError(f"transposed-conv padding p must be an int >= 0, got {p!r}")
  if not 0 <= a < s:
    raise GeometryError(f"output padding a must be in [0, s) = [0, {s}), got {a}")
  o = s * (i - 1) + a + effective_kernel_size(k, d) - 2 * p
  if o < 1:
    raise GeometryError(f"padding {p} crops the whole output of a transposed conv (i={i}, k={k}, s={s}, d={d})")
  return o


def conv_transpose_padding(k: int, p: int = 0, a: int = 0, d: int = 1) -> tuple[int, int]:
  """The (lo, hi) padding of `lax.conv_transpose` (and `nn.ConvTranspose`) that realises (k, p, a, d)."""
  # A transposed conv is a direct conv over the stride-dilated input padded by k̂ - 1 - p on each side plus
  # a on the high side (Dumoulin & Visin, relation 14); negative pads crop.
  kk = effective_kernel_size(k, d)
  return kk - 1 - p, kk - 1 - p + a
