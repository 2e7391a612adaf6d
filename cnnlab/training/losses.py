"""Training objectives by name (`train.loss`): each maps (model outputs, targets y) to per-example values.

A loss returns a dict of (N,) float arrays whose "loss" entry is minimised; every entry is logged as a
train metric (batch mean) and reported by `steps.evaluate` (mean over the split), e.g. "accuracy".
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from cnnlab.metrics import boxes
from cnnlab.registry import Registry

LOSSES: Registry = Registry("loss")
register = LOSSES.register

BOX_COORDS = 4  # a box is (top, left, bottom, right), see cnnlab.metrics.boxes


def _per_example(v: jax.Array) -> jax.Array:
  """Mean over every axis but the first (per-pixel values -> one per example); (N,) is returned as is."""
  return v if v.ndim == 1 else v.mean(axis=tuple(range(1, v.ndim)))


@register("cross_entropy")
def cross_entropy(logits: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
  """Softmax cross-entropy and accuracy of int labels y (N,), or of per-pixel labels (N, *spatial) averaged."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
  return {"loss": _per_example(loss), "accuracy": _per_example(correct)}


@register("class_and_box")
def class_and_box(outputs: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
  """Single-object detection: cross-entropy of the class plus 1 - GIoU of the box (Rezatofighi et al. 2019).

  `outputs` (N, K + 4): K class logits, then a box in pixels. `y` (N, 5) int32: class, then the true box.
  """
  logits, box = outputs[:, :-BOX_COORDS], outputs[:, -BOX_COORDS:]
  label, true_box = y[:, 0], y[:, 1:].astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, label)
  iou, giou = boxes.iou_and_giou(box, true_box)
  correct = (jnp.argmax(logits, -1) == label).astype(jnp.float32)
  return {"loss": ce + 1.0 - giou, "accuracy": correct, "box_iou": iou,
          "hit": correct * (iou >= 0.5)}  # right class and IoU >= 0.5 (PASCAL VOC's criterion)


def get(name: str) -> Callable[[jax.Array, jax.Array], dict[str, jax.Array]]:
  """The loss called `name` (a one-line `UserError` if there is none)."""
  return LOSSES.get(name)
