"""cnnlab's XLA:CPU defaults: set before the backend starts, never over the user's, only where XLA knows them."""

import os
import subprocess
import sys
from importlib import metadata

import jax
import pytest

from cnnlab.runtime import xla_flags

FLAG = next(iter(xla_flags.FLAGS))


@pytest.fixture
def env(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.delenv(xla_flags.ENV_VAR, raising=False)
  return monkeypatch


def test_adds_the_flags_after_the_users_own(env):
  env.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  added = xla_flags.apply()
  assert added == [f"--{FLAG}={xla_flags.FLAGS[FLAG]}"]
  assert os.environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=8", *added]
  assert xla_flags.apply() == []  # idempotent: nothing twice


def test_the_users_value_wins_and_off_sets_nothing(env):
  env.setenv("XLA_FLAGS", f"--{FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
  assert xla_flags.apply() == []
  env.delenv("XLA_FLAGS")
  env.setenv(xla_flags.ENV_VAR, "off")
  assert xla_flags.apply() == []


def test_unknown_jaxlib_release_sets_nothing(env):
  env.setattr(xla_flags, "RELEASES", ("99.",))
  assert xla_flags.apply() == []


@pytest.mark.skipif(jax.default_backend() != "cpu" or not metadata.version("jaxlib").startswith(xla_flags.RELEASES),
                    reason="an XLA:CPU flag, set for the listed jaxlib releases")
def test_apply_before_jax_keeps_dots_out_of_ynnpack():
  """In a fresh process: the flag reaches XLA (a compiled dot has no YNNPACK fusion), and XLA accepts it."""
  code = ("from cnnlab.runtime import xla_flags; xla_flags.apply(); import jax, jax.numpy as jnp; a = jnp.ones((64, 64)); "
          "print('ynn' in jax.jit(lambda a: jax.nn.relu(a @ a)).lower(a).compile().as_text())")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
  assert out.stdout.strip() == "False"


def test_importing_cnnlab_leaves_the_environment_and_jax_config_alone():
  """In a fresh process: importing every cnnlab module changes no environment variable and no JAX config value."""
  code = ("import os, pkgutil, importlib, jax; env = dict(os.environ); cfg = dict(jax.config.values); import cnnlab; "
          "[importlib.import_module(m.name) for m in pkgutil.walk_packages(cnnlab.__path__, 'cnnlab.')]; "
          "print(env == dict(os.environ), cfg == dict(jax.config.values))")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.ENV_VAR)}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True, env=env)
  assert out.stdout.split()[-2:] == ["True", "True"], out.stderr[-2000:]
