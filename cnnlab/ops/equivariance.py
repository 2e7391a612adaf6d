"""Translation equivariance of conv stacks at random initialisation: how far each layer's feature map is from
shifting with its input, by downsampling (stride 1, stride 2, max pool, max-blur pool) and padding.

    rows = equivariance.probe(STACKS, features=8, depth=3, seeds=range(10), x_digits=x)
    # [{"stack": "maxpool", "padding": "SAME", "input": "digits", "depth": 2, "shift": "1 px", "seed": 0,
    #   "error": relative error of the shifted input's map against the shifted map}, ...]
"""

from typing import Iterable, Sequence

import flax.linen as nn
import jax
import numpy as np

from cnnlab.models import blurpool
from cnnlab.ops import shift
from cnnlab.runtime import prng

STACKS = ("stride1", "stride2", "maxpool", "maxblur")  # downsampling after each conv of a probe stack


class ProbeStack(nn.Module):
  """Random-init conv stack returning every layer's feature map (for the equivariance probe)."""
  features: int
  depth: int
  kind: str      # one of STACKS
  padding: str   # 'CIRCULAR' | 'SAME' (zeros)

  @nn.compact
  def __call__(self, x):
    maps = []
    for i in range(self.depth):
      stride = 2 if self.kind == "stride2" else 1
      x = nn.relu(nn.Conv(self.features, (3, 3), strides=(stride, stride), padding=self.padding, name=f"conv{i}")(x))
      if self.kind == "maxpool":
        x = nn.max_pool(x, (2, 2), (2, 2))
      elif self.kind == "maxblur":
        # Circular blur padding with circular conv padding, so that only subsampling can break equivariance.
        circular = self.padding == "CIRCULAR"
        x = jax.numpy.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)], mode="wrap" if circular else "constant")
        x = blurpool.blur_pool(blurpool.max_stride1(x), pad_mode="circular" if circular else "zero")
      maps.append(x)
    return maps


def probe(kinds: Sequence[str], features: int, depth: int, seeds: Iterable[int], x_digits: np.ndarray) -> list[dict]:
  """Equivariance error of each layer of random-init `ProbeStack`s (one init per seed), per (stack kind, padding,
  input: the digits or Gaussian noise of their shape, depth, shift: 1 px or the layer's total stride)."""
  rng = np.random.default_rng(0)
  inputs = {"digits": x_digits, "noise": rng.standard_normal(x_digits.shape).astype(np.float32)}
  rows = []
  for kind in kinds:
    for padding in ("CIRCULAR", "SAME"):
      net = ProbeStack(features, depth, kind, padding)
      apply = jax.jit(net.apply)
      for seed in seeds:
        with prng.classic_threefry():
          params = net.init(jax.random.key(seed), inputs["digits"][:1])
        for input_name, x in inputs.items():
          for layer in range(depth):
            stride = 1 if kind == "stride1" else 2 ** (layer + 1)
            f = lambda v, d=layer: apply(params, v)[d]
            for shift_name, s in (("1 px", 1), ("stride", stride)):
              # Circular input shifts: on zero-bordered canvas digits they equal zero-fill shifts.
              err = shift.equivariance_error(f, x, (s, s), stride, "circular")
              rows.append({"stack": kind, "padding": padding, "input": input_name, "depth": layer + 1,
                           "shift": shift_name, "seed": seed, "error": err})
  return rows
