"""Runs one experiment in a workdir: config.json first, resume-aware, results last."""

import ast
import datetime
import hashlib
import json
import os
import time
from types import ModuleType
from typing import Sequence

import jax
import ml_collections

from cnnlab.report import rendering as reporting
from cnnlab.errors import UserError


def default_workdir(exp_name: str) -> str:
  return os.path.join("runs", exp_name, datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))


def config_dict(config: ml_collections.ConfigDict) -> dict:
  """The config as config.json stores it."""
  return json.loads(config.to_json_best_effort())


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, volatile: Sequence[str] = ()) -> None:
  """Creates `workdir` and writes config.json; refuses a workdir holding a different config.

  Fields named in `volatile` (presentation options that do not change what is computed) may differ:
  config.json is then rewritten.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test_{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise UserError(f"cannot write to workdir {workdir!r}: {e.strerror}") from None
  path = os.path.join(workdir, "config.json")
  new = config_dict(config)
  old = reporting.read_json(path) if os.path.exists(path) else None
  if old is not None:
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if set(changed) - set(volatile):
      raise UserError(f"workdir {workdir!r} holds a run with a different config (fields {', '.join(changed)}); "
                      "use a new --workdir")
  if old != new:
    reporting.write_json(path, new)


def source_digest(module: ModuleType) -> str:
  """A short hash of the experiment module's code (not its comments or docstrings): a changed one is re-run."""
  with open(module.__file__, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    body = getattr(node, "body", None)
    if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
      node.body = body[1:] or [ast.Pass()]
  return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def run_experiment(module: ModuleType, config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs `module.run(config, workdir)` unless results.json says the run already finished.

  A finished run also leaves run_info.json: its wall and CPU time, backend and the module's source hash.
  """
  prepare_workdir(workdir, config, getattr(module, "VOLATILE_FIELDS", ()))
  results_path = os.path.join(workdir, "results.json")
  if os.path.exists(results_path):
    print(f"Finished run found in {workdir}; not re-running (results.md holds its table).")
    return reporting.read_json(results_path)
  start, cpu_start = time.time(), time.process_time()
  results = module.run(config, workdir)
  seconds = time.time() - start
  reporting.write_json(os.path.join(workdir, "run_info.json"), {
      "source": source_digest(module), "seconds": round(seconds, 1),
      "cpu_seconds": round(time.process_time() - cpu_start, 1),  # all threads of this process
      "finished": datetime.datetime.now().isoformat(timespec="seconds"),
      "backend": jax.default_backend(), "devices": jax.device_count()})
  print(f"Done in {seconds:.1f} s on {jax.device_count()} {jax.default_backend()} device(s). "
        f"Results: {os.path.join(workdir, 'results.md')}")
  return results
