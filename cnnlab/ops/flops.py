"""Multiply-adds (MACs) per layer of any linen model, from shapes only.

`layer_macs` runs the model abstractly (`jax.eval_shape`, nothing is materialised) with every
`nn.Conv`, `nn.ConvTranspose`, `nn.ConvLocal`, `nn.Dense` and `nn.DenseGeneral` call intercepted,
and counts one multiply-add per weight use for one example:
  Conv / Dense / DenseGeneral:  outputs x (kernel size / output features) = prod(out) * prod(kernel[:-1]);
  ConvTranspose:                inputs x kernel size (each input is spread over the kernel, before any cropping);
  ConvLocal:                    prod(kernel): every unshared weight is used once.
Bias additions, activations and pooling are not multiply-adds. Products with zero padding count
(the usual convention); `unpadded_macs` leaves them out, which is what XLA counts: `xla_flops` gives
XLA's own count of a layer, 2 per unpadded multiply-add plus 1 per bias addition, as an independent check.
"""

import inspect
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax.linen import linear

from cnnlab.ops import conv_arithmetic

_COUNTED = (nn.Conv, nn.ConvTranspose, nn.ConvLocal, nn.Dense, nn.DenseGeneral)


def _macs(module: nn.Module, kernel_shape: tuple[int, ...], in_shape: tuple[int, ...],
          out_shape: tuple[int, ...]) -> int:
  """Multiply-adds of one call, per example (leading batch axis dropped)."""
  per_out = int(np.prod(out_shape[1:]))
  if isinstance(module, nn.ConvLocal):
    return int(np.prod(kernel_shape))
  if isinstance(module, nn.ConvTranspose):
    return int(np.prod(in_shape[1:-1])) * int(np.prod(kernel_shape))
  if isinstance(module, nn.DenseGeneral):
    return per_out * int(np.prod(kernel_shape)) // int(np.prod(module.features if isinstance(
        module.features, (tuple, list)) else (module.features,)))
  return per_out * int(np.prod(kernel_shape[:-1]))


def _taps_on_input(i: int, o: int, k: int, s: int, d: int, lo: int) -> int:
  """(output position, kernel tap) pairs of one axis that land on the input rather than its padding."""
  pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - lo
  return int(((pos >= 0) & (pos < i)).sum())


def _unpadded_macs(module: nn.Module, kernel_shape: tuple[int, ...], in_shape: tuple[int, ...],
                   out_shape: tuple[int, ...], macs: int) -> int | None:
  """Multiply-adds with real inputs only (padding taps dropped); None where not worked out (e.g. ConvLocal)."""
  if isinstance(module, (nn.Dense, nn.DenseGeneral)):
    return macs
  if type(module) is not nn.Conv:  # pylint: disable=unidiomatic-typecheck
    return None
  n = len(kernel_shape) - 2
  expand = lambda v: (v,) * n if v is None or isinstance(v, int) else tuple(v)
  strides, dil, in_dil = expand(module.strides or 1), expand(module.kernel_dilation or 1), expand(
      module.input_dilation or 1)
  pads = linear.canonicalize_padding(module.padding, n)
  if any(v != 1 for v in in_dil) or (isinstance(pads, str) and pads not in ("SAME", "VALID")):
    return None
  spatial = in_shape[1:-1]
  if isinstance(pads, str):
    pads = [conv_arithmetic.conv_padding(pads, i, k, s, d) for i, k, s, d in zip(spatial, kernel_shape, strides, dil)]
  taps = np.prod([_taps_on_input(i, o, k, s, d, lo) for i, o, k, s, d, (lo, _) in
                  zip(spatial, out_shape[1:-1], kernel_shape, strides, dil, pads)])
  return int(taps) * int(np.prod(kernel_shape[-2:])) * int(np.prod(out_shape[1:-n - 1]))


def layer_macs(model: nn.Module, x_shape: tuple[int, ...]) -> list[dict[str, Any]]:
  """One row per conv/dense call in call order: path, type, shapes, parameters and MACs per example."""
  rows: list[dict[str, Any]] = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name == "__call__" and isinstance(module, _COUNTED):
      kernel = module.variables["params"]["kernel"]
      bias = module.variables["params"].get("bias")
      x = args[0]
      macs = _macs(module, tuple(kernel.shape), tuple(x.shape), tuple(out.shape))
      rows.append({
          "layer": "/".join(module.path), "type": type(module).__name__,
          "in_shape": tuple(x.shape[1:]), "out_shape": tuple(out.shape[1:]),
          "kernel_shape": tuple(kernel.shape),
          "params": int(np.prod(kernel.shape)) + (int(np.prod(bias.shape)) if bias is not None else 0),
          "macs": macs,
          "unpadded_macs": _unpadded_macs(module, tuple(kernel.shape), tuple(x.shape), tuple(out.shape), macs),
          "bias_adds": int(np.prod(out.shape[1:])) if bias is not None else 0,
          "module": module.clone(parent=None, name=None), "x": jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype),
      })
    return out

  # cnnlab models take `train`; a bare linen layer does not.
  kwargs = {"train": False} if "train" in inspect.signature(type(model).__call__).parameters else {}

  def run(x):
    with nn.intercept_methods(record):
      return model.init(jax.random.key(0), x, **kwargs)

  jax.eval_shape(run, jax.ShapeDtypeStruct(x_shape, np.float32))
  return rows


def xla_flops(module: nn.Module, x: jax.ShapeDtypeStruct) -> float:
  """XLA's FLOP count of `module` applied to one abstract input (compiles nothing, allocates nothing)."""
  variables = jax.eval_shape(module.init, jax.random.key(0), x)
  return float(jax.jit(module.apply).lower(variables, x).cost_analysis()["flops"])


def macs_by_layer(model: nn.Module, x_shape: tuple[int, ...], top_level: bool = True,
                  with_xla: bool = False) -> list[dict[str, Any]]:
  """MACs per layer (summed over sub-layers when `top_level`), optionally with XLA's FLOPs alongside."""
  rows = layer_macs(model, x_shape)
  out: dict[str, dict[str, Any]] = {}
  for r in rows:
    name = r["layer"].split("/")[0] if top_level else r["layer"]
    agg = out.setdefault(name, {"layer": name, "type": r["type"], "sublayers": 0, "params": 0, "macs": 0,
                                "unpadded_macs": 0, "bias_adds": 0, **({"xla_flops": 0.0} if with_xla else {})})
    if agg["type"] != r["type"]:
      agg["type"] = "mixed"
    agg["sublayers"] += 1
    agg["params"] += r["params"]
    agg["macs"] += r["macs"]
    agg["bias_adds"] += r["bias_adds"]
    if agg["unpadded_macs"] is not None:
      agg["unpadded_macs"] = None if r["unpadded_macs"] is None else agg["unpadded_macs"] + r["unpadded_macs"]
    if with_xla:
      agg["xla_flops"] += xla_flops(r["module"], r["x"])
  return list(out.values())


def total_macs(model: nn.Module, x_shape: tuple[int, ...]) -> int:
  """Multiply-adds of the model's conv and dense layers for one example."""
  return sum(r["macs"] for r in layer_macs(model, x_shape))
