"""Shared fixtures: tiny real data and tiny training configs, so compiled functions are reused across tests."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from cnnlab.runtime import xla_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

xla_flags.apply()  # as run.py does, before JAX starts, so that tests compute what runs compute


def pytest_configure(config):
  """One persistent compilation cache per test session (a fresh temp dir, removed at the end), shared by the xdist
  workers and the runs tests start as subprocesses: many tests compile the same tiny programs, and XLA:CPU's
  compiles, not the computations, are most of the suite's time. Never the user's cache (~/.cache/cnnlab)."""
  import tempfile  # pylint: disable=g-import-not-at-top
  from cnnlab.runtime import compile_cache  # pylint: disable=g-import-not-at-top
  if os.environ.get(compile_cache.ENV_VAR, "x").strip().lower() in ("", "off", "0", "false", "none"):
    return  # CNNLAB_JAX_CACHE=off pytest: every test compiles its own programs
  if not hasattr(config, "workerinput"):  # the controller (or a run without xdist) makes the directory
    config.cnnlab_jax_cache = tempfile.mkdtemp(prefix="cnnlab-test-jax-cache-")
    os.environ[compile_cache.ENV_VAR] = config.cnnlab_jax_cache  # workers and subprocesses inherit it
  compile_cache.enable()


def pytest_unconfigure(config):
  import shutil  # pylint: disable=g-import-not-at-top
  if getattr(config, "cnnlab_jax_cache", None):
    shutil.rmtree(config.cnnlab_jax_cache, ignore_errors=True)


@pytest.fixture
def classic_threefry():
  """jax.random draws with the classic Threefry for the test: XLA:CPU compiles each new draw in ~0.5 s instead of
  ~3 s (JAX 0.10). For tests that compare two computations on the same draws (kernels against plain ops); tests
  of training keep the default, as runs do."""
  from cnnlab.runtime import prng  # pylint: disable=g-import-not-at-top
  with prng.classic_threefry():
    yield


@pytest.fixture(scope="session")
def digits():
  from cnnlab import data
  c = data.get_config()
  c.name = "digits"
  return data.load(c)


@pytest.fixture
def tiny_train_config():
  from cnnlab.training import train
  c = train.get_config()
  c.steps = 8
  c.batch_size = 32
  c.eval_batch_size = 200
  c.log_every = 2
  c.checkpoint_every = 4
  c.progress = False
  c.tensorboard = False
  return c


def judgements(obj, path="results"):
  """Paths in `obj` (nested dicts and lists) whose value is a bool or a ledger verdict string."""
  from cnnlab.report import ledger  # pylint: disable=g-import-not-at-top
  if isinstance(obj, dict):  # results["smoke_test"] says what kind of run measured them, not a judgement
    return [p for k, v in obj.items() if not (path == "results" and k == "smoke_test")
            for p in judgements(v, f"{path}[{k!r}]")]
  if isinstance(obj, (list, tuple)):
    return [p for i, v in enumerate(obj) for p in judgements(v, f"{path}[{i}]")]
  import numpy as np  # pylint: disable=g-import-not-at-top
  return [path] if isinstance(obj, (bool, np.bool_)) or (isinstance(obj, str) and obj in ledger.VERDICTS) else []


@pytest.fixture
def run_quick(tmp_path):
  """Runs an experiment's quick config end to end; returns (config, results, results.md text, workdir)."""
  import json  # pylint: disable=g-import-not-at-top
  import experiments  # pylint: disable=g-import-not-at-top
  from cnnlab import runner  # pylint: disable=g-import-not-at-top
  from cnnlab.report import rendering as reporting  # pylint: disable=g-import-not-at-top

  def run(name):
    module = experiments.get(name)
    config = module.get_config(quick=True)
    if "train" in config:
      config.train.progress = False
    workdir = str(tmp_path / name)
    results = runner.run_experiment(module, config, workdir)
    md = open(os.path.join(workdir, "results.md")).read()
    # Everything returned is what results.json holds (string keys, lists: nothing lost in JSON).
    assert json.loads(json.dumps(reporting._jsonable(results))) == reporting.read_json(  # pylint: disable=protected-access
        os.path.join(workdir, "results.json"))
    # Experiments measure, judges judge: no verdict and no precomputed pass/fail flag in the results.
    assert not judgements(results), f"{name} results hold verdicts or flags at {judgements(results)[:5]}"
    return config, results, md, workdir

  return run
