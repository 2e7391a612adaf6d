"""Runs one experiment in a workdir: validated before the disk is touched, locked, stamped, resume-aware."""

import datetime
import json
import os
import time
from types import ModuleType

import jax
import ml_collections

from cnnlab import provenance, workdir as workdirs
from cnnlab.errors import UserError
from cnnlab.report import rendering as reporting
from cnnlab.training import parallel


def default_workdir(exp_name: str) -> str:
  return os.path.join("runs", exp_name, datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))


def config_dict(config: ml_collections.ConfigDict) -> dict:
  """The config as config.json stores it."""
  return json.loads(config.to_json_best_effort())


def _subconfigs(config: ml_collections.ConfigDict, key: str):
  """Every sub-config stored under `key`, at any depth."""
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      if k == key:
        yield v
      yield from _subconfigs(v, key)


def validate(module: ModuleType, config: ml_collections.ConfigDict) -> None:
  """Checks all that can be checked before the disk is touched; a one-line `UserError` otherwise.

  That is the experiment's own rule (`validate_config`, if it has one), every shared training config, and that
  every dataset named is available.
  """
  from cnnlab import data  # pylint: disable=g-import-not-at-top
  from cnnlab.training import train  # pylint: disable=g-import-not-at-top
  if hasattr(module, "validate_config"):
    module.validate_config(config)
  fields = set(train.get_config())
  for c in _subconfigs(config, "train"):
    if fields <= set(c):
      train.validate_config(c)
  for c in _subconfigs(config, "data"):
    if "name" in c and isinstance(c.name, str):
      if c.name.startswith("tfds:"):
        data.load(c)  # cached per process: the run reuses what is loaded here
      else:
        data.DATASETS.get(c.name)


def _reuse_or_retire(config: ml_collections.ConfigDict, path: str, stamp: dict, strict: bool,
                     rerun: bool = False) -> tuple[dict | None, str]:
  """(finished results to reuse, "") or (None, why it must run); what does not match `stamp` is moved aside.

  With `strict`, a workdir holding another config, or files with no trustworthy record of what computed them, is
  a `UserError` instead.
  """
  rec = workdirs.record(path)
  if not rec.other_files:  # at most config.json / provenance.json: nothing was computed yet
    return None, "not run yet"
  config_path = os.path.join(path, "config.json")
  if rec.config is None and rec.stamp:  # rebuilt only from what the run recorded, never from this command line
    rec.config = rec.stamp["config"]
    reporting.write_json(config_path, rec.config)
    print(f"cnnlab: {config_path} was missing; rebuilt it from the run's recorded provenance")
  if rec.config is None:
    why = "no readable config.json or recorded provenance"
    if strict:
      raise UserError(f"workdir {path!r} holds files but {why}, so what computed them is unknown; move them aside "
                      "or use another --workdir")
    workdirs.retire(path, why)
    return None, why
  new = config_dict(config)
  if rec.config != new:
    changed = sorted(k for k in set(rec.config) | set(new) if rec.config.get(k) != new.get(k))
    why = f"its config changed (fields {', '.join(changed)})"
    if strict:
      raise UserError(f"workdir {path!r} holds a run with a different config (fields {', '.join(changed)}); "
                      "use a new --workdir")
    workdirs.retire(path, why)
    return None, why
  reasons = ["re-run requested"] if rerun else provenance.differences(rec.stamp, stamp)
  if reasons:
    why = reasons[0] if rerun else "changed since it ran: " + "; ".join(reasons)
    workdirs.retire(path, why)
    return None, why
  if rec.results is None:
    return None, "unfinished; resuming"
  return rec.results, ""


def _finish(module: ModuleType, config: ml_collections.ConfigDict, path: str, stamp: dict, used: set[str]) -> dict:
  reporting.write_json(os.path.join(path, "config.json"), config_dict(config))  # config.json first
  started = datetime.datetime.now().isoformat(timespec="seconds")
  reporting.write_json(os.path.join(path, "provenance.json"), {**stamp, "started": started})
  start, cpu_start = time.time(), time.process_time()
  results = module.run(config, path)
  seconds = time.time() - start
  stamp = provenance.with_lookups(stamp, used)  # the modules of the models and datasets it looked up by name
  reporting.write_json(os.path.join(path, "run_info.json"), {
      "seconds": round(seconds, 1), "cpu_seconds": round(time.process_time() - cpu_start, 1),  # all threads
      "started": started, "finished": datetime.datetime.now().isoformat(timespec="seconds"),
      "backend": jax.default_backend(), "devices": jax.device_count(), "provenance": stamp})
  print(f"Done in {seconds:.1f} s on {jax.device_count()} {jax.default_backend()} device(s). "
        f"Results: {os.path.join(path, 'results.md')}")
  return results


def run_experiment(module: ModuleType, config: ml_collections.ConfigDict, workdir: str, strict: bool = True) -> dict:
  """Runs `module.run(config, workdir)` unless the workdir holds a finished run with the same provenance.

  Validation comes before the workdir exists; one process at a time writes in it (process 0 of a multi-process
  run). A finished run whose code or library versions changed is moved aside and run again. With `strict` (the
  command line), a workdir holding another config is refused; the report passes False to move it aside.
  """
  with provenance.recording_lookups() as used:
    validate(module, config)  # looks up every dataset the config names: recorded even when a cache serves the run
    stamp = provenance.stamp(config, module)
    with workdirs.claim(workdir, exclusive=parallel.is_chief()):
      results, _ = _reuse_or_retire(config, workdir, stamp, strict)
      if results is not None:
        print(f"Finished run found in {workdir} (same config, code and versions); not re-running "
              "(results.md holds its table).")
        return results
      return _finish(module, config, workdir, stamp, used)


def plan(module: ModuleType, config: ml_collections.ConfigDict, workdir: str, rerun: bool = False) -> str:
  """Why `module` must (re-)run in `workdir` ("" if its finished results stand); a stale run is moved aside first."""
  if not os.path.isdir(workdir):
    return "not run yet"
  stamp = provenance.stamp(config, module)
  with workdirs.claim(workdir):
    return _reuse_or_retire(config, workdir, stamp, strict=False, rerun=rerun)[1]
