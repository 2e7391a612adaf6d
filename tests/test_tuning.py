"""Learning rates are chosen on a validation split of the training set: never the test set, cached, reproducible."""

import numpy as np
import pytest

from cnnlab import models
from cnnlab.errors import UserError
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


def test_bad_grids_are_one_line_errors():
  for grid in ((), (0.0,), (-1e-3,)):
    with pytest.raises(UserError, match="grid"):
      tuning.check_grid(grid)
  assert np.isclose(tuning.VALIDATION_FRACTION, 0.2)
