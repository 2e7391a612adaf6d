"""Layers shared by the models: pooling, heads, and CPU fast paths for plain, grouped, transposed and local convs."""

import functools
import itertools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.kernels import conv_grads
from cnnlab.errors import UserError

POOLS = ("max", "avg", "none")

# The CPU fast paths below (block pooling, sliced ConvLocal, conv as one matmul, grouped convs split, unpadded
# convs with a matmul backward pass) compute the same numbers as flax's plain layers up to float rounding;
# `set_fast_paths(False)` (the benchmark's "naive" column) turns them off at trace time to measure the gain.
_FAST_PATHS = True


def set_fast_paths(enabled: bool) -> None:
  """Uses (True, the default) or bypasses cnnlab's faster pooling and conv paths in functions traced from now on."""
  global _FAST_PATHS
  _FAST_PATHS = bool(enabled)


def spatial_dims(x: jax.Array) -> int:
  """Number of spatial dimensions of a (batch, *spatial, channels) array."""
  return x.ndim - 2


def _block_reduce(x: jax.Array, window: int, reduce) -> jax.Array:
  """Non-overlapping pooling as reshape + reduce, with VALID semantics (incomplete edge windows dropped).

  On XLA:CPU this is several times faster than `reduce_window`, whose max-pool gradient
  (select_and_scatter) cost ~120 ms of a ~190 ms CNN step here. Gradients agree with
  `nn.max_pool` except on exact ties inside a window, where the gradient is split rather than
  given to the first maximum (after ReLU, ties are zeros whose gradient is zero anyway).
  """
  d = spatial_dims(x)
  sizes = [s // window for s in x.shape[1:-1]]
  x = x[(slice(None), *(slice(0, n * window) for n in sizes))]
  shape = [x.shape[0]]
  for n in sizes:
    shape += [n, window]
  x = x.reshape(*shape, x.shape[-1])
  return reduce(x, axis=tuple(2 + 2 * i for i in range(d)))


def _block_slices(x: jax.Array, window: int) -> list[jax.Array]:
  """Each window offset's strided slice of x (B, *spatial, C), incomplete edge windows dropped."""
  d = spatial_dims(x)
  sizes = [s // window for s in x.shape[1:-1]]
  return [x[(slice(None), *(slice(o, o + (n - 1) * window + 1, window) for o, n in zip(offset, sizes)))]
          for offset in np.ndindex(*(window,) * d)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def block_max(x: jax.Array, window: int) -> jax.Array:
  """Non-overlapping max pooling (VALID) with `jnp.max`'s gradient: ties in a window share it equally.

  As the maximum of the window's strided slices, with the gradient written out as one select over the
  input (each window's max and share of the gradient repeated over it): XLA:CPU reduced the
  (B, H/2, 2, W/2, 2, C) view of the reshape version over its interleaved size-2 axes slowly (LeNet-like
  first pool, forward + backward: 3.6 -> 1.4 ms with the gradient as 4 stacked slices; the select made the
  weight_sharing CNN's step another ~20% faster). Same numbers, ties included. (Applying the ReLU after the
  pool instead, which gives the same numbers too, measured slower inside the full steps.)
  """
  return functools.reduce(jnp.maximum, _block_slices(x, window))


def _block_max_fwd(x, window):
  y = block_max(x, window)
  return y, (x, y)


def _block_max_bwd(window, res, g):
  x, y = res
  share = g / sum((s == y).astype(g.dtype) for s in _block_slices(x, window))  # ties split the gradient

  def up(a):  # (B, *n, C) -> (B, *(n * window), C), each value repeated over its window
    a = a.reshape(a.shape[0], *(v for n in a.shape[1:-1] for v in (n, 1)), a.shape[-1])
    a = jnp.broadcast_to(a, (a.shape[0], *(v for n in y.shape[1:-1] for v in (n, window)), a.shape[-1]))
    return a.reshape(a.shape[0], *(n * window for n in y.shape[1:-1]), a.shape[-1])

  x = x[(slice(None), *(slice(0, n * window) for n in y.shape[1:-1]))]
  dx = jnp.where(x == up(y), up(share), jnp.zeros((), g.dtype))
  return (jnp.pad(dx, [(0, 0), *((0, s - n) for s, n in zip(res[0].shape[1:-1], dx.shape[1:-1])), (0, 0)]),)


block_max.defvjp(_block_max_fwd, _block_max_bwd)


def pool(x: jax.Array, kind: str, window: int = 2, stride: int | None = None) -> jax.Array:
  """Max or average pooling over all spatial dims ('none' returns `x`)."""
  if kind == "none":
    return x
  d = spatial_dims(x)
  stride = window if stride is None else stride
  if kind in ("max", "avg") and stride == window and _FAST_PATHS:
    return block_max(x, window) if kind == "max" else _block_reduce(x, window, jnp.mean)
  if kind == "max":
    return nn.max_pool(x, (window,) * d, (stride,) * d)
  if kind == "avg":
    return nn.avg_pool(x, (window,) * d, (stride,) * d)
  raise UserError(f"unknown pooling {kind!r}; use one of {POOLS}")


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Averages over every spatial position: (B, *spatial, C) -> (B, C)."""
  return x.mean(axis=tuple(range(1, x.ndim - 1)))


def flatten(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


HEADS = ("flatten", "gap")


def head_features(x: jax.Array, head: str) -> jax.Array:
  """Feature map -> vector for the classifier: 'flatten' (keeps position) or 'gap' (global average pool)."""
  if head == "gap":
    return global_avg_pool(x)
  if head == "flatten":
    return flatten(x)
  raise UserError(f"unknown head {head!r}; use one of {HEADS}")


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu, "sigmoid": nn.sigmoid, "identity": lambda x: x,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in ACTIVATIONS:
    raise UserError(f"unknown activation {name!r}; use one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class ConvLocal(nn.ConvLocal):
  """`nn.ConvLocal` (same parameters, same outputs) computed as shifted slices + one batched matmul.

  flax's version extracts patches with `conv_general_dilated_patches`, whose gradient is slow on
  XLA:CPU (a 14x14x16->32 3x3 layer: 477 ms vs 86 ms here for forward+backward). Unusual
  configurations (input dilation, circular/reflect/causal padding, a mask) use flax's code path.
  """

  @nn.compact
  def __call__(self, inputs):
    d = inputs.ndim - 2
    kernel_size = tuple(self.kernel_size) if not isinstance(self.kernel_size, int) else (self.kernel_size,) * d
    strides = _tuple(self.strides, d)
    dilation = _tuple(self.kernel_dilation, d)
    plain = (self.mask is None and _tuple(self.input_dilation, d) == (1,) * d and self.feature_group_count == 1
             and not (isinstance(self.padding, str) and self.padding.upper() in ("CIRCULAR", "REFLECT", "CAUSAL")))
    if not plain or len(kernel_size) != d or not _FAST_PATHS:
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


def _stacked_windows(x, kernel_size, dilation, out, strides) -> jax.Array:
  """(*kernel_size, B, *out): every kernel offset's strided slice of x (B, *spatial), built one dim at a time."""
  for i, (k, r, n, s) in enumerate(zip(kernel_size, dilation, out, strides)):
    before = (slice(None),) * (2 * i + 1)  # spatial dim i sits after i kernel axes, the batch axis, i spatial dims
    x = jnp.stack([x[(*before, slice(o * r, o * r + (n - 1) * s + 1, s))] for o in range(k)], axis=i)
  return x


def _tuple(v, d: int) -> tuple[int, ...]:
  if v is None:
    return (1,) * d
  return (v,) * d if isinstance(v, int) else tuple(v)


# Up to this many input channels, convolution as shifted slices + one matmul
# beats XLA:CPU's conv (measured, batch 64, 3x3 SAME, forward+backward: 28x28x1->8 lax 11.9 ms vs 2.4 ms
# sliced). With more channels it is about even per layer, and a threshold of 16 made the LeNet-like and
# weight_sharing train steps ~10-40% slower. Results are identical up to float rounding.
SLICED_CONV_MAX_IN_CHANNELS = 3
MAX_SPLIT_GROUPS = 4  # grouped convs with up to this many groups run as one conv per group


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
  """`lax.conv_general_dilated` for flax's channels-last layout, rewritten where XLA:CPU is slow (same numbers).

  Few input channels: slices + one matmul. 2-4 feature groups: one conv per group. Unpadded stride 1:
  XLA's forward conv, the backward pass as matmuls (`conv_grads`). Anything else: lax itself.
  """
  d = lhs.ndim - 2
  channels_last = (dimension_numbers is not None and tuple(dimension_numbers.lhs_spec) == (0, d + 1, *range(1, d + 1))
                   and tuple(dimension_numbers.rhs_spec) == (d + 1, d, *range(d)))
  fast = channels_last and batch_group_count == 1 and _FAST_PATHS and jax.default_backend() == "cpu"
  if fast and 1 < feature_group_count <= MAX_SPLIT_GROUPS:
    # One conv per group: XLA:CPU's grouped conv ran 3-6x slower than its groups as separate convs (AlexNet's
    # conv2, 7x7x96 -> 256 in 2 groups, batch 32, forward + backward: 224 -> 35 ms). The same sums.
    return jnp.concatenate([
        conv_general_dilated(x, w, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, 1, 1,
                             precision, preferred_element_type)
        for x, w in zip(jnp.split(lhs, feature_group_count, -1), jnp.split(rhs, feature_group_count, -1))], -1)
  fast = fast and feature_group_count == 1
  simple = (fast and (lhs_dilation is None or all(v == 1 for v in lhs_dilation))
            and lhs.shape[-1] <= SLICED_CONV_MAX_IN_CHANNELS)
  if (fast and not simple and preferred_element_type is None
      and all(v == 1 for v in _tuple(window_strides, d) + _tuple(lhs_dilation, d) + _tuple(rhs_dilation, d))
      and all(lo == hi == 0 for lo, hi in (jax.lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:d], (1,) * d, padding)
                                           if isinstance(padding, str) else padding))):
    return conv_grads.conv(lhs, rhs, precision)  # unpadded, stride 1: backward pass as matmuls
  if not simple:
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count, precision,
                                        preferred_element_type)
  kernel_size = rhs.shape[:d]
  strides = _tuple(window_strides, d)
  dilation = _tuple(rhs_dilation, d)
  eff = [(k - 1) * r + 1 for k, r in zip(kernel_size, dilation)]
  pads = jax.lax.padtype_to_pads(lhs.shape[1:-1], eff, strides, padding) if isinstance(padding, str) else padding
  x = jax.lax.pad(lhs, jnp.zeros((), lhs.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
  out = [(x.shape[1 + i] - eff[i]) // strides[i] + 1 for i in range(d)]
  c, n = lhs.shape[-1], lhs.shape[0]
  # Channels-first patches: each kernel tap's slice is a contiguous (N * out) row, and the product is
  # (O, C*K) @ (C*K, N*out), a long matmul; channels-last patches (N*out, K*C) @ (K*C, O) with a few
  # output channels ran ~3x slower forward and backward on XLA:CPU.
  x_cf = jnp.moveaxis(x, -1, 0).reshape(c * n, *x.shape[1:-1])                        # (C*N, *spatial)
  # Built one spatial dim at a time (5 row slices, then 5 column slices of those for a 5x5 kernel): as one
  # stack of 25 two-dim slices XLA:CPU ran 25 separate slice copies and a concatenate, ~6x slower.
  patches = _stacked_windows(x_cf, kernel_size, dilation, out, strides).reshape(-1, n * int(np.prod(out)))
  w = rhs.reshape(-1, rhs.shape[-1])                                                   # (K*C, O), rows (k, c)
  y = jnp.einsum("ko,kp->op", w, patches, precision=precision, preferred_element_type=preferred_element_type)
  return jnp.moveaxis(y.reshape(-1, n, *out), 0, -1)


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


def conv_transpose(x, kernel, strides, padding, precision=None) -> jax.Array:
  """`lax.conv_transpose` (channels-last, kernel not flipped, explicit padding) as one stride-1 conv per phase.

  A stride-s transposed conv is a conv over the input with s - 1 zeros inserted between pixels. The output
  pixels at one position mod s (a phase) meet only every s-th kernel tap, so each of the s^d phases is an
  ordinary conv of the undilated input with a sub-kernel, and the phases interleave: s^d times fewer
  multiply-adds, none of them with zeros. On XLA:CPU the input-dilated conv's kernel gradient was the
  slowest op of the segmentation step (~6 ms of ~39 ms per layer).
  """
  d = x.ndim - 2
  strides = _tuple(strides, d)
  dn = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, _CHANNELS_LAST[d])
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


_CHANNELS_LAST = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


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
  """`nn.ConvTranspose` (same parameters, same outputs) computed phase by phase on CPU; see `conv_transpose`.

  Masks, a transposed kernel, kernel dilation and string, circular or negative padding use flax's code path.
  """

  @nn.compact
  def __call__(self, inputs):
    d = inputs.ndim - 2
    kernel_size = _tuple(self.kernel_size, d)
    padding = [(self.padding, self.padding)] * d if isinstance(self.padding, int) else self.padding
    plain = (_FAST_PATHS and jax.default_backend() == "cpu" and self.mask is None and not self.transpose_kernel
             and _tuple(self.kernel_dilation, d) == (1,) * d and d in _CHANNELS_LAST and not isinstance(padding, str)
             and len(padding) == d and len(kernel_size) == d)
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
