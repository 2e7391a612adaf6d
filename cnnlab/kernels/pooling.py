"""Pooling as strided slices and reshapes: `pool` computes what `layers.pool` does without `reduce_window`."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.models import layers


def pool(x: jax.Array, kind: str, window: int = 2, stride: int | None = None) -> jax.Array:
  """`layers.pool` (max or average over all spatial dims, 'none' returns `x`), without XLA:CPU's slow paths.

  Non-overlapping windows: `block_max` / a reshaped mean. Max with stride 1: `shifted_max`. Else `layers.pool`.
  """
  stride = window if stride is None else stride
  if kind == "max" and stride == window:
    return block_max(x, window)
  if kind == "avg" and stride == window:
    return block_reduce(x, window, jnp.mean)
  if kind == "max" and stride == 1:
    return shifted_max(x, window)
  return layers.pool(x, kind, window, stride)


def block_reduce(x: jax.Array, window: int, reduce) -> jax.Array:
  """Non-overlapping pooling as reshape + reduce, with VALID semantics (incomplete edge windows dropped).

  On XLA:CPU this is several times faster than `reduce_window`, whose max-pool gradient
  (select_and_scatter) took most of a small CNN's step. Gradients agree with `nn.max_pool`
  except on exact ties inside a window, where the gradient is split rather than
  given to the first maximum (after ReLU, ties are zeros whose gradient is zero anyway).
  """
  d = x.ndim - 2
  sizes = [s // window for s in x.shape[1:-1]]
  x = x[(slice(None), *(slice(0, n * window) for n in sizes))]
  shape = [x.shape[0]]
  for n in sizes:
    shape += [n, window]
  x = x.reshape(*shape, x.shape[-1])
  return reduce(x, axis=tuple(2 + 2 * i for i in range(d)))


def _block_slices(x: jax.Array, window: int) -> list[jax.Array]:
  """Each window offset's strided slice of x (B, *spatial, C), incomplete edge windows dropped."""
  d = x.ndim - 2
  sizes = [s // window for s in x.shape[1:-1]]
  return [x[(slice(None), *(slice(o, o + (n - 1) * window + 1, window) for o, n in zip(offset, sizes)))]
          for offset in np.ndindex(*(window,) * d)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def block_max(x: jax.Array, window: int) -> jax.Array:
  """Non-overlapping max pooling (VALID) with `jnp.max`'s gradient: ties in a window share it equally.

  As the maximum of the window's strided slices, with the gradient written out as one select over the
  input (each window's max and share of the gradient repeated over it): XLA:CPU reduced the
  (B, H/2, 2, W/2, 2, C) view of the reshape version over its interleaved size-2 axes slowly (a LeNet-like
  first pool ran several times faster with the gradient as stacked slices, and the select made the
  weight_sharing CNN's step faster still). Same numbers, ties included. (Applying the ReLU after the
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


def shifted_max(x: jax.Array, window: int = 2) -> jax.Array:
  """`window`-wide max over every spatial dim with stride 1 ('VALID'), as maxima of shifted slices.

  `nn.max_pool`'s gradient (select_and_scatter) is slow on XLA:CPU. Same values; on exact ties the gradient
  is shared rather than given to the first maximum.
  """
  for axis in range(1, x.ndim - 1):
    n = x.shape[axis]
    x = functools.reduce(jnp.maximum, [jax.lax.slice_in_dim(x, o, n - window + 1 + o, axis=axis)
                                       for o in range(window)])
  return x
