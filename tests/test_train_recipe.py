"""The train step's recipe: augmentation inside the step (deterministic, exact on resume) and bfloat16 compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import models
from cnnlab.errors import UserError
from cnnlab.training import train
from cnnlab.training.metric_writer import read_metrics


def cnn():
  return models.create("cnn", features=(4,), kernel_size=3)


def params_of(state):
  return jax.tree.map(np.asarray, jax.device_get(state.params))


def test_augmented_training_is_deterministic_differs_from_plain_and_resumes_exactly(digits, tiny_train_config,
                                                                                 tmp_path):
  tiny_train_config.augment = "translate:1,flip"
  full, _ = train.fit(tiny_train_config, cnn(), digits, str(tmp_path / "full"), seed=3)
  again, _ = train.fit(tiny_train_config, cnn(), digits, str(tmp_path / "again"), seed=3)
  jax.tree.map(np.testing.assert_array_equal, params_of(full), params_of(again))
  half = tiny_train_config.copy_and_resolve_references()
  half.steps = 4
  train.fit(half, cnn(), digits, str(tmp_path / "resumed"), seed=3)
  resumed, _ = train.fit(tiny_train_config, cnn(), digits, str(tmp_path / "resumed"), seed=3)
  jax.tree.map(np.testing.assert_array_equal, params_of(full), params_of(resumed))
  plain_config = tiny_train_config.copy_and_resolve_references()
  plain_config.augment = ""
  plain, _ = train.fit(plain_config, cnn(), digits, str(tmp_path / "plain"), seed=3)
  assert not np.array_equal(params_of(plain)["head"]["kernel"], params_of(full)["head"]["kernel"])


def test_bfloat16_compute_trains_with_float32_params(digits, tiny_train_config, tmp_path):
  tiny_train_config.compute_dtype = "bfloat16"
  tiny_train_config.steps = 20
  tiny_train_config.learning_rate = 1e-2
  tiny_train_config.log_every = 10
  state, summary = train.fit(tiny_train_config, cnn(), digits, str(tmp_path), seed=0)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.opt_state) if hasattr(p, "dtype")
             and jnp.issubdtype(p.dtype, jnp.floating))
  losses = [r["train_loss"] for r in read_metrics(str(tmp_path)) if "train_loss" in r]
  assert losses[-1] < losses[0] and summary["train_accuracy"] > 0.3


@pytest.mark.parametrize("field,value,match", [("augment", "rotate:3", "rotate"),
                                                ("compute_dtype", "float16", "compute_dtype")])
def test_bad_recipe_fields_are_one_line_errors(tiny_train_config, field, value, match):
  tiny_train_config[field] = value
  with pytest.raises(UserError, match=match):
    train.validate_config(tiny_train_config)
