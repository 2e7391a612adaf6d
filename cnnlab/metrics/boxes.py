"""Axis-aligned boxes: IoU and generalised IoU, in jnp so the same code is a metric and a training loss.

A box is (top, left, bottom, right) in pixels with exclusive bottom/right: it covers rows [top, bottom)
and columns [left, right), so a box of integer corners covers (bottom - top) x (right - left) pixels.
"""

import jax
import jax.numpy as jnp


def area(b_N4: jax.Array) -> jax.Array:
  """Areas of boxes (..., 4); an inverted box has area 0."""
  return jnp.maximum(b_N4[..., 2] - b_N4[..., 0], 0.0) * jnp.maximum(b_N4[..., 3] - b_N4[..., 1], 0.0)


def iou_and_giou(a_N4: jax.Array, b_N4: jax.Array, eps: float = 1e-9) -> tuple[jax.Array, jax.Array]:
  """IoU and GIoU = IoU - |hull \\ union| / |hull| of paired boxes (..., 4) (Rezatofighi et al. 2019)."""
  a_N4, b_N4 = jnp.asarray(a_N4, jnp.float32), jnp.asarray(b_N4, jnp.float32)
  inter = area(jnp.concatenate([jnp.maximum(a_N4[..., :2], b_N4[..., :2]),
                                jnp.minimum(a_N4[..., 2:], b_N4[..., 2:])], axis=-1))
  union = area(a_N4) + area(b_N4) - inter
  hull = area(jnp.concatenate([jnp.minimum(a_N4[..., :2], b_N4[..., :2]),
                               jnp.maximum(a_N4[..., 2:], b_N4[..., 2:])], axis=-1))
  iou = inter / jnp.maximum(union, eps)
  return iou, iou - (hull - union) / jnp.maximum(hull, eps)


def iou(a_N4: jax.Array, b_N4: jax.Array) -> jax.Array:
  """Intersection over union of paired boxes (..., 4)."""
  return iou_and_giou(a_N4, b_N4)[0]
