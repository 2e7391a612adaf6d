"""Sampling variance of a difference between two arms scored on the same test examples.

A finite test set is a sample too: another draw of the same size would move a metric, and a comparison's interval
must cover that (`stats.with_fixed_variance` adds it; more seeds do not shrink it). Two arms scored on the same
examples mostly err together, so the variance of their difference is far smaller than the sum of theirs: for a
mean over examples it is var(a_i - b_i) / N (McNemar's paired variance for 0/1 outcomes); for a metric pooled
over examples before it is computed (mean IoU from one confusion matrix summed over images) the examples' parts
are resampled jointly for both arms (a paired bootstrap).
"""

from typing import Callable, Sequence

import numpy as np


def paired_mean_var(a_N: Sequence[float], b_N: Sequence[float]) -> float:
  """Sampling variance of mean(a) - mean(b) over the same N examples: var(a_i - b_i) / N."""
  d = np.asarray(a_N, np.float64) - np.asarray(b_N, np.float64)
  if d.ndim != 1 or len(d) < 2:
    raise ValueError("per-example values of both arms must be equal-length 1-D sequences of at least 2")
  return float(np.var(d, ddof=1) / len(d))


def paired_bootstrap_var(parts_a: np.ndarray, parts_b: np.ndarray, statistic: Callable[[np.ndarray], float],
                         draws: int = 200, seed: int = 0) -> float:
  """Variance of statistic(pooled a) - statistic(pooled b) over bootstrap resamples of the N examples, each
  resample drawn once for both arms (their parts: e.g. per-image confusion matrices, summed to pool them)."""
  parts_a, parts_b = np.asarray(parts_a), np.asarray(parts_b)
  n = len(parts_a)
  if n < 2 or len(parts_b) != n:
    raise ValueError("both arms need the parts of the same N >= 2 examples")
  counts_BN = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=draws)
  pooled_a, pooled_b = np.tensordot(counts_BN, parts_a, axes=1), np.tensordot(counts_BN, parts_b, axes=1)
  return float(np.var([statistic(x) - statistic(y) for x, y in zip(pooled_a, pooled_b)], ddof=1))


def per_image_confusion(y_true_NHW: np.ndarray, y_pred_NHW: np.ndarray, num_classes: int) -> np.ndarray:
  """(N, K, K) confusion matrices, one per image (row = true class, column = predicted); they sum to the pooled one."""
  t, p = np.asarray(y_true_NHW, np.int64), np.asarray(y_pred_NHW, np.int64)
  n, k = len(t), num_classes
  index = (np.arange(n)[:, None] * k * k + (t * k + p).reshape(n, -1)).ravel()
  return np.bincount(index, minlength=n * k * k).reshape(n, k, k)
