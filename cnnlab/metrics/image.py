"""Image-quality metrics for reconstructions in [0, 1]: MSE and PSNR, in jnp so they run inside jitted steps."""

import jax
import jax.numpy as jnp


def mse(x: jax.Array, y: jax.Array, axis: tuple[int, ...] | None = None) -> jax.Array:
  """Mean squared error over `axis` (all axes by default)."""
  return jnp.mean(jnp.square(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32)), axis=axis)


def psnr_from_mse(err: jax.Array, data_range: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB for a given MSE."""
  return 10.0 * jnp.log10(data_range ** 2 / err)


def psnr(x: jax.Array, y: jax.Array, data_range: float = 1.0, axis: tuple[int, ...] | None = None) -> jax.Array:
  """PSNR in dB of `x` against the reference `y` (both in [0, data_range])."""
  return psnr_from_mse(mse(x, y, axis), data_range)
