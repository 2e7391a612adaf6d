"""Experiment registry: every module in this package is an experiment.

An experiment module defines
  get_config(quick: bool = False) -> ml_collections.ConfigDict   # every field declared with a comment
  run(config, workdir: str) -> dict                               # writes results.json, results.md, figures
and its docstring's first line states the claim it tests. Adding one is adding one file.
"""

import importlib
import pkgutil
from types import ModuleType

from cnnlab.registry import Registry

EXPERIMENTS: Registry = Registry("experiment")


def _discover() -> None:
  for info in pkgutil.iter_modules(__path__):
    if not info.name.startswith("_"):
      EXPERIMENTS.register(info.name, f"{__name__}.{info.name}")


def get(name: str) -> ModuleType:
  """The experiment module called `name` (a one-line `UserError` if there is none)."""
  return importlib.import_module(EXPERIMENTS.get(name))


def names() -> list[str]:
  return EXPERIMENTS.names()


def claim(name: str) -> str:
  """First line of the experiment's docstring: the claim it tests."""
  return (get(name).__doc__ or "").strip().splitlines()[0]


_discover()
