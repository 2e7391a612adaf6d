"""Receptive fields: analytic (per layer of a conv/pool stack), empirical (gradient support), effective.

Along one axis, a layer with kernel k, stride s, dilation d and padding p maps output unit n to inputs
[start + n * jump, start + n * jump + rf - 1], with the recursions (Araujo et al. 2019)
    rf_l = rf_{l-1} + (k̂_l - 1) * jump_{l-1},   jump_l = jump_{l-1} * s_l,   start_l = start_{l-1} - p_l * jump_{l-1},
where k̂ = k + (k - 1)(d - 1). The empirical field is where the gradient of one output unit with
respect to the input is non-zero; the effective field (Luo et al. 2016) is that gradient's magnitude.
"""

import dataclasses
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.ops import conv_arithmetic, conv_ops
from cnnlab.errors import UserError


@dataclasses.dataclass(frozen=True)
class Layer:
  """One conv or pool layer, the same along each spatial axis."""
  kernel: int
  stride: int = 1
  dilation: int = 1
  padding: int = 0
  kind: str = "conv"  # 'conv' | 'pool' (only the geometry matters)
  name: str = ""


def analytic(layers: Sequence[Layer]) -> list[dict]:
  """Receptive field size, jump (input pixels between adjacent units) and start, after each layer."""
  rf, jump, start, rows = 1, 1, 0, []
  for i, layer in enumerate(layers):
    if layer.kind not in ("conv", "pool"):
      raise UserError(f"layer kind must be 'conv' or 'pool', got {layer.kind!r}")
    kk = conv_arithmetic.effective_kernel_size(layer.kernel, layer.dilation)
    start -= layer.padding * jump
    rf += (kk - 1) * jump
    jump *= layer.stride
    rows.append({"layer": layer.name or f"{layer.kind}{i}", "kernel": layer.kernel, "stride": layer.stride,
                 "dilation": layer.dilation, "rf": rf, "jump": jump, "start": start})
  return rows


def output_size(layers: Sequence[Layer], i: int) -> int:
  """Size of the last feature map for an input of size i (a GeometryError if the input is too small)."""
  for layer in layers:
    i = conv_arithmetic.conv_output_size(i, layer.kernel, layer.stride, layer.padding, layer.dilation)
  return i


def unit_field(layers: Sequence[Layer], index: int) -> tuple[int, int]:
  """Input interval [lo, hi] (inclusive, may run into the padding) seen by output unit `index`."""
  last = analytic(layers)[-1]
  lo = last["start"] + index * last["jump"]
  return lo, lo + last["rf"] - 1


def linear_stack(layers: Sequence[Layer]) -> Callable[[jax.Array], jax.Array]:
  """The stack's geometry as a 1-channel linear net of all-ones kernels on (N, H, W, 1) inputs."""
  # Every weight is positive and there is no non-linearity, so no two paths cancel and the gradient of an
  # output unit is non-zero exactly on its receptive field (with max-pooling or ReLUs it can be sparser).
  def fn(x):
    for layer in layers:
      w = jnp.ones((layer.kernel, layer.kernel, 1, 1), x.dtype)
      x = conv_ops.conv_lax(x, w, (layer.stride,) * 2, [(layer.padding, layer.padding)] * 2,
                            rhs_dilation=(layer.dilation,) * 2)
    return x
  return fn


def gradient_map(fn: Callable[[jax.Array], jax.Array], x: jax.Array, index: tuple[int, int]) -> np.ndarray:
  """|d (sum over channels and batch of fn(x)[:, row, col, :]) / dx|, summed over the batch and channels: (H, W)."""
  # One jit: XLA compiles the whole backward pass once instead of op by op.
  grad = jax.jit(jax.grad(lambda x: fn(x)[:, index[0], index[1], :].sum()))(x)
  return np.asarray(jnp.abs(grad).sum(axis=(0, -1)))


def nonzero_extent(grad: np.ndarray) -> list[tuple[int, int]]:
  """[(lo, hi)] per axis of the bounding box of the non-zero entries (inclusive)."""
  nz = np.argwhere(grad != 0)
  if not len(nz):
    return [(0, -1)] * grad.ndim
  return [(int(a), int(b)) for a, b in zip(nz.min(0), nz.max(0))]


def empirical(layers: Sequence[Layer], margin_units: int = 2, size: int | None = None) -> dict:
  """Measured vs predicted field of the last layer's centre unit, on an all-ones input of side `size`."""
  # The default size leaves room for `margin_units` output units either side of the field.
  last = analytic(layers)[-1]
  size = size or last["rf"] + 2 * margin_units * last["jump"]
  centre = output_size(layers, size) // 2
  grad = gradient_map(linear_stack(layers), jnp.ones((1, size, size, 1)), (centre, centre))
  (r_lo, r_hi), (c_lo, c_hi) = nonzero_extent(grad)
  lo, hi = unit_field(layers, centre)
  predicted = (max(lo, 0), min(hi, size - 1))  # The part of the field that lies on the input, not its padding.
  return {"input": size, "unit": centre, "measured_rows": (r_lo, r_hi), "measured_cols": (c_lo, c_hi),
          "predicted": predicted, "measured_rf": r_hi - r_lo + 1, "analytic_rf": last["rf"],
          "agree": (r_lo, r_hi) == predicted == (c_lo, c_hi)}


def empirical_per_layer(layers: Sequence[Layer], margin_units: int = 2) -> list[dict]:
  """`empirical` after every layer, all on the input the whole stack needs (so the ops compile once)."""
  last = analytic(layers)[-1]
  size = last["rf"] + 2 * margin_units * last["jump"]
  return [empirical(layers[:n], size=size) for n in range(1, len(layers) + 1)]


def mass_area(erf: np.ndarray, fraction: float = 0.9) -> int:
  """Fewest pixels that hold `fraction` of the map's total mass."""
  v = np.sort(np.abs(erf).ravel())[::-1]
  return int(np.searchsorted(np.cumsum(v), fraction * v.sum()) + 1)


def mass_radius(erf: np.ndarray, fraction: float = 0.9) -> float:
  """Radius of the disc around the map's centre of mass that holds `fraction` of its mass."""
  m = np.abs(erf) / np.abs(erf).sum()
  rr, cc = np.indices(m.shape)
  r0, c0 = (m * rr).sum(), (m * cc).sum()
  dist = np.hypot(rr - r0, cc - c0).ravel()
  order = np.argsort(dist)
  return float(dist[order][np.searchsorted(np.cumsum(m.ravel()[order]), fraction)])


class ConvStack(nn.Module):
  """3x3 (or k x k) convs, one per entry of `dilations`, VALID padding, ReLU between: for counting parameters."""
  features: int = 16
  kernel: int = 3
  dilations: Sequence[int] = (1, 1, 1)

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    for i, d in enumerate(self.dilations):
      x = nn.Conv(self.features, (self.kernel,) * 2, kernel_dilation=d, padding="VALID", name=f"conv{i}")(x)
      x = nn.relu(x) if i < len(self.dilations) - 1 else x
    return x

  def layers(self) -> list[Layer]:
    """The stack's geometry, for `analytic` and `empirical`."""
    return [Layer(self.kernel, dilation=d, name=f"conv{i}") for i, d in enumerate(self.dilations)]
