"""Learning rates chosen on a validation split carved from the training set, never on the test set.

    rates = tuning.learning_rates(workdir, config.train, {"cnn": cnn, "mlp": mlp}, ds, config.lr_grid)
    # {"cnn": {"chosen": 0.003, "validation_accuracy": {"0.001": 0.95, "0.003": 0.96, ...}}, ...}

Each (model, rate) trains once, seed 0, on the training set minus a stratified `VALIDATION_FRACTION` held out
(the test set is replaced by that held-out part), in `<workdir>/tuning/trials/`: finished runs are reused, so
the grid is cached with the experiment and resumes like any sweep. The rate with the highest validation accuracy
wins (ties: the smaller rate). Experiments record the table in results.json.
"""

import dataclasses
import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import ml_collections

from cnnlab import data
from cnnlab.errors import UserError
from cnnlab.training import sweep

VALIDATION_FRACTION = 0.2  # of the training set, stratified, held out to choose the rate
SEED = 0                   # the tuning trainings' seed (init, batch order and the split)


def validation_set(dataset: Any) -> Any:
  """`dataset` with its test split replaced by a stratified part of its training set (and that part removed)."""
  split = data.holdout_split(dataset.name, dataset.x_train, dataset.y_train, VALIDATION_FRACTION, SEED,
                             dataset.num_classes)
  return dataclasses.replace(dataset, x_train=split.x_train, y_train=split.y_train, x_test=split.x_test,
                             y_test=split.y_test)


def check_grid(grid: Sequence[float]) -> None:
  if not grid or any(not r > 0 for r in grid):
    raise UserError(f"a learning-rate grid needs at least one rate, all > 0; got {tuple(grid)}")


def learning_rates(workdir: str, train_config: ml_collections.ConfigDict, nets: Mapping[str, nn.Module],
                   dataset: Any, grid: Sequence[float], progress: bool = False) -> dict[str, dict]:
  """Per model: the chosen rate and every rate's validation accuracy (keys as `f"{rate:g}"`)."""
  check_grid(grid)
  val = validation_set(dataset)
  trials = []
  for name, net in nets.items():
    for rate in grid:
      config = ml_collections.ConfigDict(train_config.to_dict())
      config.learning_rate = float(rate)
      trials.append(sweep.Trial(f"{name}_lr{rate:g}", net, val, SEED, config, {"model": name, "rate": float(rate)}))
  records = sweep.run_trials(os.path.join(workdir, "tuning"), trials, progress=progress)
  out = {}
  for name in nets:
    scores = {r["rate"]: r["test_accuracy"] for r in records if r["model"] == name}
    best = max(sorted(scores), key=lambda r: scores[r])  # sorted: ties go to the smaller rate
    out[name] = {"chosen": best, "validation_accuracy": {f"{r:g}": v for r, v in scores.items()},
                 "n_validation": len(val.y_test)}
  return out


def with_rate(train_config: ml_collections.ConfigDict, rate: float) -> ml_collections.ConfigDict:
  """A copy of `train_config` at learning rate `rate`."""
  config = ml_collections.ConfigDict(train_config.to_dict())
  config.learning_rate = float(rate)
  return config
