"""Reflection padding as slices + concatenation (`layers.reflect_pad`'s numbers)."""

import jax
import jax.numpy as jnp

from cnnlab.errors import UserError


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """`layers.reflect_pad`: reflection padding of the two spatial dims of (B, H, W, C)."""
  # Slices + concat: jnp.pad(mode="reflect") made the DIP step and its compile markedly slower on CPU.
  for axis in (1, 2):
    n = x.shape[axis]
    if pad >= n:
      raise UserError(f"reflection padding {pad} needs feature maps larger than {n}")
    before = jax.lax.rev(jax.lax.slice_in_dim(x, 1, pad + 1, axis=axis), (axis,))
    after = jax.lax.rev(jax.lax.slice_in_dim(x, n - pad - 1, n - 1, axis=axis), (axis,))
    x = jnp.concatenate([before, x, after], axis=axis)
  return x
