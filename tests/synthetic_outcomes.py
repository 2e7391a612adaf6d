"""Synthetic per-example test outcomes for judge tests: packed correctness with given per-seed accuracies."""

import numpy as np

from cnnlab.report import stats


def outcomes(cells: dict[str, list[float]], n_test: int, agreement: float = 0.8, seed: int = 0) -> dict:
  """{cell: [packed correctness per seed]} whose accuracies are ~`cells[cell][i]`, arms correlated per example.

  Seed i's arms share, on a fraction `agreement` of the examples, one uniform draw (how hard the example is), so
  their outcomes agree there as real nets' do; elsewhere each arm draws its own.
  """
  rng = np.random.default_rng(seed)
  seeds = len(next(iter(cells.values())))
  hard = rng.random((seeds, n_test))
  shared = rng.random((seeds, n_test)) < agreement
  out = {}
  for cell, accuracies in cells.items():
    u = np.where(shared, hard, rng.random((seeds, n_test)))
    out[cell] = [stats.pack_correct(u[i] < a) for i, a in enumerate(accuracies)]
  return out
