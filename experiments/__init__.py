"""Experiment registry: every module in this package is an experiment.

An experiment module defines
  get_config(quick: bool = False) -> ml_collections.ConfigDict   # from `new_config(quick)`; every field commented
  run(config, workdir: str) -> dict                               # writes results.json, results.md, figures
and its docstring's first line states the claim it tests; it may also define
  validate_config(config) -> None                                 # a one-line UserError for impossible values
which runs before anything is written. Adding one is adding one file.
"""

import importlib
import pkgutil
from types import ModuleType

import ml_collections

from cnnlab.registry import Registry

EXPERIMENTS: Registry = Registry("experiment")
# Ledger order: from the anatomy of a conv layer to what trained nets do; experiments not named here follow.
ORDER = ("param_count", "weight_sharing", "conv_arithmetic", "conv_as_matmul", "classic_kernels", "receptive_field",
         "translation", "pooling", "spatial_prior", "overfitting", "depth_and_gradients", "deep_image_prior",
         "localisation", "segmentation")


def new_config(quick: bool) -> ml_collections.ConfigDict:
  """The fields every experiment's config starts with; its `get_config` adds its own."""
  c = ml_collections.ConfigDict()
  # The quick variant: tiny sizes that exercise the code in seconds. Its results carry `smoke_test` and its claims
  # get no verdicts (results.md, REPORT.md and the console say "smoke test"): numbers that small are not evidence.
  c.smoke_test = quick
  return c


def _discover() -> None:
  for info in pkgutil.iter_modules(__path__):
    if not info.name.startswith("_"):
      EXPERIMENTS.register(info.name, f"{__name__}.{info.name}")


def get(name: str) -> ModuleType:
  """The experiment module called `name` (a one-line `UserError` if there is none)."""
  return importlib.import_module(EXPERIMENTS.get(name))


def names() -> list[str]:
  """Every experiment, in ledger order (ORDER, then the rest alphabetically)."""
  return sorted(EXPERIMENTS.names(), key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def claim(name: str) -> str:
  """First line of the experiment's docstring: the claim it tests."""
  return (get(name).__doc__ or "").strip().splitlines()[0]


_discover()
