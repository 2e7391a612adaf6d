"""Hostile input: any training setting either passes validation or is a one-line UserError; bad arrays are named."""

import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from cnnlab import data
from cnnlab.training import train
from cnnlab.errors import UserError

NUMBERS = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, -1, 2**31, 1e-30, 1e30]))
FIELDS = ["steps", "batch_size", "eval_batch_size", "log_every", "checkpoint_every", "keep_checkpoints",
          "learning_rate", "momentum", "weight_decay", "grad_clip", "warmup_steps", "eval_every"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), NUMBERS, max_size=4))
def test_train_config_values_validate_or_fail_cleanly(overrides):
  c = train.get_config()
  for k, v in overrides.items():
    try:
      c[k] = v
    except (TypeError, ValueError):  # the typed config refuses it, as `--config.k=v` parsing does (exit 2)
      continue
  try:
    train.validate_config(c)
  except UserError as e:
    assert "\n" not in str(e)
    return
  assert c.steps >= 1 and c.batch_size >= 1 and math.isfinite(c.learning_rate) and c.learning_rate > 0


@pytest.mark.parametrize("bad,expected", [
    (dict(x_train=np.zeros((4, 64), np.float32)), r"must be float32 \(N, \*spatial, C\)"),
    (dict(x_train=np.zeros((4, 8, 8, 1), np.float64)), "must be float32"),
    (dict(y_train=np.zeros(3, np.int32)), r"must be int32 \(4,\)"),
    (dict(x_train=np.full((4, 8, 8, 1), np.nan, np.float32)), "NaN or inf"),
    (dict(y_train=np.array([0, 1, 2, 10], np.int32)), r"labels must be in \[0, 10\)"),
])
def test_bad_arrays_are_named(bad, expected):
  arrays = dict(x_train=np.zeros((4, 8, 8, 1), np.float32), y_train=np.zeros(4, np.int32),
                x_test=np.zeros((2, 8, 8, 1), np.float32), y_test=np.zeros(2, np.int32))
  arrays.update(bad)
  with pytest.raises(UserError, match=expected):
    data.Dataset("bad", num_classes=10, **arrays)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, float("nan")])
def test_bad_fractions(digits, fraction):
  with pytest.raises(UserError):
    data.subsample(digits, fraction, seed=0)


KEYS = ["train.steps", "train.batch_size", "train.learning_rate", "train.log_every", "seeds", "kernel_size",
        "train_fractions", "features", "data.name", "data.test_fraction", "no_such_key", "train.optimizer", "train"]
VALUES = st.one_of(st.integers(-10**15, 10**15).map(str), st.sampled_from(
    ["nan", "inf", "-inf", "1e309", "", "abc", "()", "(0.5,", "(1.5,)", "(-1,)", "True", "None", "[]", "{}",
     "'digits'", "tfds:", "../../etc", "0", "-1", "0.0", "1e-40", "(0,)", "(1000000,)"]))


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
@example([("train_fractions", "nan")])  # CI found this one: the tuple parsed to ('nan',)
@example([("features", "(-1,)")])
def test_cli_overrides_run_or_exit_2_without_traceback(tmp_path_factory, overrides):
  """Every case either runs (still going after 20 s counts) or exits 2 with one line; never a traceback."""
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir = tmp_path_factory.mktemp("fuzz")
  args = [sys.executable, "run.py", "--exp=weight_sharing", "--quick", f"--workdir={workdir}",
          "--config.train.progress=False"] + [f"--config.{k}={v}" for k, v in overrides]
  proc = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  try:
    _, err = proc.communicate(timeout=20)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.communicate()
    return  # it was running
  assert "Traceback" not in err, (args, err[-3000:])
  if proc.returncode != 0:
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, (args, proc.returncode, err[-3000:])
