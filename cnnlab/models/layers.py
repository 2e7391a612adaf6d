"""Plain layer helpers shared by the models: pooling by name, heads, activations, LRN, reflection padding.

These are the plain flax / jnp ops; faster CPU kernels for some of them live in `cnnlab.kernels`, and
`kernels.specialise` swaps them into a model's op fields.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.errors import UserError

ModuleDef = Any  # a flax Module class, or a functools.partial of one
POOLS = ("max", "avg", "none")


def spatial_dims(x: jax.Array) -> int:
  """Number of spatial dimensions of a (batch, *spatial, channels) array."""
  return x.ndim - 2


def pool(x: jax.Array, kind: str, window: int = 2, stride: int | None = None) -> jax.Array:
  """Max or average pooling over all spatial dims, VALID ('none' returns `x`)."""
  if kind == "none":
    return x
  d = spatial_dims(x)
  stride = window if stride is None else stride
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


def lrn(x: jax.Array, size: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75) -> jax.Array:
  """Local response normalisation (Krizhevsky et al. 2012): x / (k + alpha * sum of x^2 over `size` maps)^beta."""
  sq = jnp.pad(x * x, [(0, 0)] * (x.ndim - 1) + [(size // 2, (size - 1) // 2)])
  return x / (k + alpha * sum(sq[..., i:i + x.shape[-1]] for i in range(size))) ** beta


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """Reflection padding of the two spatial dims of (B, H, W, C)."""
  for n in x.shape[1:3]:
    if pad >= n:
      raise UserError(f"reflection padding {pad} needs feature maps larger than {n}")
  return jnp.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode="reflect")
