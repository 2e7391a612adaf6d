"""Learning rates are chosen on a validation split of the training set: never the test set, cached, reproducible."""

import math

import numpy as np
import pytest

from cnnlab import models
from cnnlab.errors import UserError
from cnnlab.report import rates
from cnnlab.training import tuning


def test_validation_split_comes_from_the_training_set_only(digits):
  val = tuning.validation_set(digits)
  assert len(val.y_train) + len(val.y_test) == len(digits.y_train)
  train_rows = {r.tobytes() for r in digits.x_train}
  assert all(r.tobytes() in train_rows for r in val.x_test)  # held out from training, not the test set
  assert not {r.tobytes() for r in val.x_test} & {r.tobytes() for r in val.x_train}
  assert len(val.y_test) == pytest.approx(tuning.VALIDATION_FRACTION * len(digits.y_train), abs=1)


def test_the_best_validation_rate_is_chosen_and_reused(digits, tiny_train_config, tmp_path):
  nets = {"mlp": models.create("mlp", hidden=(32,))}
  grid = (1e-5, 3e-3)  # 8 steps at 1e-5 barely move: 3e-3 must win on validation accuracy
  out = tuning.learning_rates(str(tmp_path), tiny_train_config, nets, digits, grid)
  scores = out["mlp"]["validation_accuracy"]
  assert set(scores) == {"1e-05", "0.003"} and out["mlp"]["chosen"] == 3e-3 and scores["0.003"] > scores["1e-05"]
  summaries = sorted((tmp_path / "tuning" / "trials").glob("*/summary.json"))
  stamps = [p.stat().st_mtime_ns for p in summaries]
  assert len(summaries) == len(grid)
  again = tuning.learning_rates(str(tmp_path), tiny_train_config, nets, digits, grid)
  assert again == out and [p.stat().st_mtime_ns for p in summaries] == stamps  # reused, not retrained
  assert tuning.with_rate(tiny_train_config, 0.01).learning_rate == 0.01 and tiny_train_config.learning_rate == 1e-3


def test_bad_grids_and_seed_counts_are_one_line_errors():
  for grid in ((), (0.0,), (-1e-3,)):
    with pytest.raises(UserError, match="grid"):
      tuning.check_grid(grid)
  for seeds in (0, -1, 1.5):
    with pytest.raises(UserError, match="tuning_seeds >= 1"):
      tuning.check_grid((1e-3,), seeds)
  assert np.isclose(tuning.VALIDATION_FRACTION, 0.2)


def test_the_rate_with_the_best_mean_minus_one_standard_error_wins():
  n = 800  # binomial error of ~0.95 on 800 examples: 0.0077
  assert tuning.standard_error([0.95], n) == pytest.approx(math.sqrt(0.95 * 0.05 / n))
  assert tuning.standard_error([0.94, 0.96], n) == pytest.approx(math.sqrt(0.95 * 0.05 / n + 0.0002 / 2))
  assert tuning.standard_error([0.94, 0.96], None) == pytest.approx(math.sqrt(0.0002 / 2))  # e.g. mean IoU
  # Between steady rates the better mean wins, the larger rate as well as the smaller.
  assert tuning.choose({0.01: [0.875, 0.877], 0.03: [0.880, 0.882]}, n)[0] == 0.03
  assert tuning.choose({0.01: [0.88, 0.882], 0.03: [0.85, 0.852]}, n)[0] == 0.01
  # A rate that trains in some seeds only may have the best mean, but a wide error: the steady rate wins.
  rate, se = tuning.choose({0.001: [0.68, 0.69, 0.67], 0.003: [0.95, 0.2, 0.94]}, n)
  assert rate == 0.001 and se == pytest.approx(tuning.standard_error([0.68, 0.69, 0.67], n))
  rate, _ = tuning.choose({0.01: [0.90, 0.90, 0.90], 0.03: [0.99, 0.81, 0.90]}, n)  # equal means, one unsteady
  assert rate == 0.01
  # Exact ties: the smaller rate, whatever the order given.
  assert tuning.choose({0.03: [0.9], 0.01: [0.9]}, n)[0] == 0.01


def test_several_tuning_seeds_train_each_rate_per_seed_and_keep_seed_0s_trials(digits, tiny_train_config, tmp_path):
  nets = {"mlp": models.create("mlp", hidden=(32,))}
  grid = (1e-5, 3e-3)
  one = tuning.learning_rates(str(tmp_path), tiny_train_config, nets, digits, grid)
  stamps = {p.parent.name: p.stat().st_mtime_ns for p in (tmp_path / "tuning" / "trials").glob("*/summary.json")}
  out = tuning.learning_rates(str(tmp_path), tiny_train_config, nets, digits, grid, seeds=2)["mlp"]
  names = sorted(p.parent.name for p in (tmp_path / "tuning" / "trials").glob("*/summary.json"))
  assert names == ["mlp_lr0.003", "mlp_lr0.003_s1", "mlp_lr1e-05", "mlp_lr1e-05_s1"]
  assert all((tmp_path / "tuning" / "trials" / k / "summary.json").stat().st_mtime_ns == v for k, v in stamps.items())
  seeds = out["validation_accuracy_seeds"]
  assert seeds["0.003"][0] == one["mlp"]["validation_accuracy"]["0.003"] and len(seeds["0.003"]) == 2
  assert seeds["0.003"][1] != seeds["0.003"][0]  # another initialisation and batch order
  assert out["validation_accuracy"]["0.003"] == pytest.approx(np.mean(seeds["0.003"]))
  assert out["seeds"] == 2 and out["chosen"] == tuning.choose(
      {float(r): a for r, a in seeds.items()}, out["n_validation"])[0] == 3e-3
  text = rates.sentence({"MLP": out}, "model")
  assert "over 2 tuning seeds" in text and "minus one standard error" in text and "chosen ±" in text
  assert "tuning seeds" not in rates.sentence({"MLP": one["mlp"]}, "model")
  # Another seed set tunes on its own seeds (the split stays seed 0's).
  other = tuning.learning_rates(str(tmp_path), tiny_train_config, nets, digits, (3e-3,), seed_base=1000)["mlp"]
  assert (tmp_path / "tuning" / "trials" / "mlp_lr0.003_s1000" / "summary.json").exists()
  assert other["n_validation"] == out["n_validation"]
  assert other["validation_accuracy_seeds"]["0.003"] != seeds["0.003"][:1]
