"""Scores of a segmentation net's outputs on labelled images, with the per-image parts their paired sampling
variances need: mean IoU, pixel accuracy, digit-vs-background IoU and the checkerboard share of the foreground map.

    scores = segmentation_scores.evaluate(logits_NHWK, y_NHW)   # {"miou": ..., ..., "parts": {...}}
    var = segmentation_scores.PAIRED_VAR["miou"](scores_a["parts"]["miou"], scores_b["parts"]["miou"])
"""

import functools

import jax
import numpy as np

from cnnlab.metrics import sampling, segmentation, spectral


def foreground_probability(logits_NHWK: np.ndarray) -> np.ndarray:
  """1 - softmax probability of the background class, per pixel."""
  return 1.0 - np.asarray(jax.nn.softmax(logits_NHWK, axis=-1)[..., 0])


def foreground_iou(binary_conf: np.ndarray) -> float:
  """IoU of the digit class of a 2-class (background, digit) confusion matrix."""
  return float(segmentation.iou_per_class(binary_conf)[1])


PAIRED_VAR = {"miou": functools.partial(sampling.paired_bootstrap_var, statistic=segmentation.mean_iou),
              "foreground_iou": functools.partial(sampling.paired_bootstrap_var, statistic=foreground_iou),
              "checkerboard": sampling.paired_mean_var}  # test-set sampling variance of a paired difference


def evaluate(logits_NHWK: np.ndarray, y_NHW: np.ndarray) -> dict:
  """mIoU, pixel accuracy, digit-vs-background IoU, checkerboard share of the predictions, and their per-image
  parts (confusion matrices, shares) under "parts", for the paired sampling variances of PAIRED_VAR."""
  k = logits_NHWK.shape[-1]
  pred = logits_NHWK.argmax(-1)
  conf = sampling.per_image_confusion(y_NHW, pred, k)
  binary = sampling.per_image_confusion(y_NHW > 0, pred > 0, 2)
  boards = spectral.checkerboard_shares(foreground_probability(logits_NHWK))
  return {"miou": segmentation.mean_iou(conf.sum(0)), "foreground_iou": foreground_iou(binary.sum(0)),
          "pixel_accuracy": segmentation.pixel_accuracy(conf.sum(0)), "checkerboard": float(boards.mean()),
          "parts": {"miou": conf, "foreground_iou": binary, "checkerboard": boards}}
