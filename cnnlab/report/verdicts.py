"""Turning measurements into verdicts: every verdict string is computed from numbers, never typed in."""

import math
from typing import Sequence

import numpy as np

SUPPORTED, PARTLY, REFUTED = "supported", "partly supported", "refuted"
INCONCLUSIVE = "inconclusive"  # the measurement cannot decide (e.g. a quick config too small to show the effect)


def standard_error_of_difference(a: Sequence[float], b: Sequence[float]) -> float:
  """Standard error of mean(a) - mean(b) for independent samples (Welch)."""
  va = np.var(a, ddof=1) / len(a) if len(a) > 1 else 0.0
  vb = np.var(b, ddof=1) / len(b) if len(b) > 1 else 0.0
  return float(math.sqrt(va + vb))


def clearly_greater(a: Sequence[float], b: Sequence[float], z: float = 2.0) -> bool:
  """mean(a) exceeds mean(b) by more than `z` standard errors of the difference (and by > 0)."""
  diff = float(np.mean(a) - np.mean(b))
  return diff > 0 and diff > z * standard_error_of_difference(a, b)


def from_counts(held: int, total: int) -> str:
  """'supported' if a claim held in every case, 'refuted' in none, else 'partly supported'."""
  if total == 0:
    raise ValueError("no cases to judge")
  return SUPPORTED if held == total else REFUTED if held == 0 else PARTLY


def from_flag(holds: bool) -> str:
  """'supported' if the measured condition holds, else 'refuted'."""
  return SUPPORTED if holds else REFUTED


def about(computed: float, claimed: float, rel_tol: float) -> str:
  """'supported' if `computed` is within `rel_tol` (relative) of `claimed`, else 'refuted'."""
  return from_flag(abs(computed / claimed - 1.0) <= rel_tol)


def count_true(flags) -> tuple[int, int]:
  """(number of true values, number of values) of a dict or sequence of booleans."""
  values = list(flags.values()) if hasattr(flags, "values") else list(flags)
  return sum(bool(v) for v in values), len(values)
