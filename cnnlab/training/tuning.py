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
from typing import Any, Callable, Mapping, Sequence

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


def validation_scores(workdir: str, train_config: ml_collections.ConfigDict, nets: Mapping[str, nn.Module],
                      val: Any, grid: Sequence[float], seeds: int, seed_base: int, progress: bool,
                      name: Callable[[str, float, int], str],
                      score: Callable[[Any, Any], dict] | None = None) -> dict[str, dict[float, list[float]]]:
  """Per net, per rate: the validation score of each of its `seeds` tuning trainings (seeds `seed_base`, ...),
  in seed order, run as one sweep in `<workdir>/tuning/` (finished trainings reused). `val`: a dataset whose test
  split is the validation data; `name(net, rate, seed)`: a training's trial name; `score`: an `after_fit`
  returning {"score": value} (default: the test accuracy `fit` reports on `val`)."""
  trials = [sweep.Trial(name(n, rate, seed), net, val, seed, with_rate(train_config, rate),
                        {"net": n, "rate": float(rate)}, after_fit=score)
            for n, net in nets.items() for rate in grid for seed in range(seed_base, seed_base + seeds)]
  records = sweep.run_trials(os.path.join(workdir, "tuning"), trials, progress=progress)
  key = "score" if score else "test_accuracy"
  return {n: {float(r): [x[key] for x in records if x["net"] == n and x["rate"] == float(r)] for r in grid}
          for n in nets}


def learning_rates(workdir: str, train_config: ml_collections.ConfigDict, nets: Mapping[str, nn.Module],
                   dataset: Any, grid: Sequence[float], progress: bool = False, seeds: int = 1,
                   seed_base: int = SEED) -> dict[str, dict]:
  """Per model: the chosen rate, every rate's mean validation accuracy (keys as `f"{rate:g}"`) and per-seed
  accuracies, the chosen rate's standard error and the validation split's size. The tuning trainings use seeds
  `seed_base` .. `seed_base + seeds - 1` (an experiment's seed set: another set tunes on other seeds); the split
  is always seed `SEED`'s."""
  check_grid(grid, seeds)
  val = validation_set(dataset)
  # Seed 0 keeps its old trial name (tunings from before several seeds are reused).
  name = lambda n, rate, seed: f"{n}_lr{rate:g}" + (f"_s{seed}" if seed != SEED else "")  # noqa: E731
  out = {}
  for n, scores in validation_scores(workdir, train_config, nets, val, grid, seeds, seed_base, progress,
                                     name).items():
    chosen, se = choose(scores, len(val.y_test))
    out[n] = {"chosen": chosen, "validation_accuracy": {f"{r:g}": float(np.mean(a)) for r, a in scores.items()},
              "validation_accuracy_seeds": {f"{r:g}": a for r, a in scores.items()}, "standard_error": se,
              "seeds": seeds, "n_validation": len(val.y_test)}
  return out


def with_rate(train_config: ml_collections.ConfigDict, rate: float) -> ml_collections.ConfigDict:
  """A copy of `train_config` at learning rate `rate`."""
  config = ml_collections.ConfigDict(train_config.to_dict())
  config.learning_rate = float(rate)
  return config
