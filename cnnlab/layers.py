"""Layers shared by the models: pooling by name, global average pooling, flatten."""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.errors import UserError

POOLS = ("max", "avg", "none")


def spatial_dims(x: jax.Array) -> int:
  """Number of spatial dimensions of a (batch, *spatial, channels) array."""
  return x.ndim - 2


def pool(x: jax.Array, kind: str, window: int = 2, stride: int | None = None) -> jax.Array:
  """Max or average pooling over all spatial dims ('none' returns `x`)."""
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


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu, "sigmoid": nn.sigmoid, "identity": lambda x: x,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in ACTIVATIONS:
    raise UserError(f"unknown activation {name!r}; use one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]
