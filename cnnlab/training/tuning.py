"""Learning rates chosen on a validation split carved from the training set, never on the test set.

    rates = tuning.learning_rates(workdir, config.train, {"cnn": cnn, "mlp": mlp}, ds, config.lr_grid, seeds=3)
    # {"cnn": {"chosen": 0.003, "validation_accuracy": {"0.001": 0.95, "0.003": 0.96, ...}, ...}, ...}

Each (model, rate) trains `seeds` times (seeds `seed_base`, +1, ...: initialisation and batch order) on the training
set minus a stratified `VALIDATION_FRACTION` held out with seed 0 (the test set is replaced by that held-out part),
in `<workdir>/tuning/trials/`: finished runs are reused, so the grid is cached with the experiment and resumes like
any sweep. `choose` takes the rate with the highest mean validation accuracy minus one standard error (the split's
sampling error and the seeds' spread): the best rate, unless it trains in some seeds only. Experiments record the
table in results.json.
"""

import dataclasses
import math
import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import ml_collections
import numpy as np

from cnnlab import data
from cnnlab.errors import UserError
from cnnlab.training import sweep

VALIDATION_FRACTION = 0.2  # of the training set, stratified, held out to choose the rate
SEED = 0                   # the split's seed, and the first tuning training's (init and batch order)


def validation_set(dataset: Any) -> Any:
  """`dataset` with its test split replaced by a stratified part of its training set (and that part removed)."""
  split = data.holdout_split(dataset.name, dataset.x_train, dataset.y_train, VALIDATION_FRACTION, SEED,
                             dataset.num_classes)
  return dataclasses.replace(dataset, x_train=split.x_train, y_train=split.y_train, x_test=split.x_test,
                             y_test=split.y_test)


def check_grid(grid: Sequence[float], seeds: int = 1) -> None:
  """One-line `UserError`s for a bad rate grid or number of tuning seeds."""
  if not grid or any(not r > 0 for r in grid):
    raise UserError(f"a learning-rate grid needs at least one rate, all > 0; got {tuple(grid)}")
  if not isinstance(seeds, int) or seeds < 1:
    raise UserError(f"tuning needs at least one seed per rate (tuning_seeds >= 1), got {seeds!r}")


def standard_error(accuracies: Sequence[float], n_validation: int | None) -> float:
  """Standard error of a rate's mean validation accuracy over tuning seeds: the validation split's binomial
  sampling error (shared by the seeds, so it does not shrink with them) and the seeds' spread, in quadrature.
  `n_validation` None: a score that is not a share of examples (e.g. mean IoU): the seeds' spread alone."""
  acc = np.asarray(accuracies, np.float64)
  p = float(acc.mean())
  spread = float(acc.var(ddof=1)) / len(acc) if len(acc) > 1 else 0.0
  return math.sqrt((p * (1 - p) / n_validation if n_validation else 0.0) + spread)


def choose(scores: Mapping[float, Sequence[float]], n_validation: int | None) -> tuple[float, float]:
  """(rate, its standard error): the rate whose mean validation score over its tuning seeds minus one standard
  error (`standard_error`) is highest; ties go to the smaller rate.

  A lower confidence bound, not the mean: a rate that trains in some seeds only (a wide spread) loses to one that
  trains in all, while between steady rates the better mean wins whichever rate is smaller. (The
  one-standard-error rule, the smallest rate within one error of the best mean, was tried first: on near-ties it
  took smaller, less-trained rates; docs/report.md.)
  """
  bound = {r: float(np.mean(a)) - standard_error(a, n_validation) for r, a in scores.items()}
  best = max(sorted(bound), key=lambda r: bound[r])
  return best, standard_error(scores[best], n_validation)


def learning_rates(workdir: str, train_config: ml_collections.ConfigDict, nets: Mapping[str, nn.Module],
                   dataset: Any, grid: Sequence[float], progress: bool = False, seeds: int = 1,
                   seed_base: int = SEED) -> dict[str, dict]:
  """Per model: the chosen rate, every rate's mean validation accuracy (keys as `f"{rate:g}"`) and per-seed
  accuracies, the chosen rate's standard error and the validation split's size. The tuning trainings use seeds
  `seed_base` .. `seed_base + seeds - 1` (an experiment's seed set: another set tunes on other seeds); the split
  is always seed `SEED`'s."""
  check_grid(grid, seeds)
  val = validation_set(dataset)
  trials = []
  for name, net in nets.items():
    for rate in grid:
      config = with_rate(train_config, rate)
      for seed in range(seed_base, seed_base + seeds):  # seed 0 keeps its old trial name (older tunings reused)
        trials.append(sweep.Trial(f"{name}_lr{rate:g}" + (f"_s{seed}" if seed != SEED else ""), net, val, seed,
                                  config, {"model": name, "rate": float(rate)}))
  records = sweep.run_trials(os.path.join(workdir, "tuning"), trials, progress=progress)
  out = {}
  for name in nets:
    scores = {float(r): [x["test_accuracy"] for x in records if x["model"] == name and x["rate"] == float(r)]
              for r in grid}  # each rate's accuracies in seed order
    chosen, se = choose(scores, len(val.y_test))
    out[name] = {"chosen": chosen, "validation_accuracy": {f"{r:g}": float(np.mean(a)) for r, a in scores.items()},
                 "validation_accuracy_seeds": {f"{r:g}": a for r, a in scores.items()}, "standard_error": se,
                 "seeds": seeds, "n_validation": len(val.y_test)}
  return out


def with_rate(train_config: ml_collections.ConfigDict, rate: float) -> ml_collections.ConfigDict:
  """A copy of `train_config` at learning rate `rate`."""
  config = ml_collections.ConfigDict(train_config.to_dict())
  config.learning_rate = float(rate)
  return config
