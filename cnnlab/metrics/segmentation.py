"""Semantic-segmentation metrics from a confusion matrix: per-class IoU, mean IoU, pixel accuracy."""

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
  """(K, K) int64 counts: row = true class, column = predicted class, over every pixel of the arrays."""
  t, p = np.asarray(y_true).ravel().astype(np.int64), np.asarray(y_pred).ravel().astype(np.int64)
  if t.shape != p.shape or (t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes)):
    raise ValueError(f"labels must be equal-sized arrays of classes in [0, {num_classes})")
  return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
  """TP / (TP + FP + FN) per class; NaN for a class neither present nor predicted."""
  tp = np.diag(conf).astype(np.float64)
  union = conf.sum(0) + conf.sum(1) - tp
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(union > 0, tp / union, np.nan)


def mean_iou(conf: np.ndarray) -> float:
  """Mean of the per-class IoUs over classes present in the truth or the prediction (as sklearn's macro Jaccard)."""
  return float(np.nanmean(iou_per_class(conf)))


def pixel_accuracy(conf: np.ndarray) -> float:
  """Fraction of pixels whose predicted class is right."""
  return float(np.trace(conf) / max(conf.sum(), 1))
