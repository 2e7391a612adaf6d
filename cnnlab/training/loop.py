"""The loop `fit` and `fit_seeds` share: step, fetch metrics, log, call hooks, checkpoint, stop on NaN or a signal.

`Runs` is what one program advances: `fit`'s single run, or one run per seed of a stacked state; each keeps the
single-seed files (checkpoints, metrics.jsonl, pending metrics, summary.json) in its own workdir.
"""

import json
import math
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from cnnlab import workdir as workdirs
from cnnlab.errors import Preempted, TrainingDiverged, UserError
from cnnlab.ops import analysis
from cnnlab.report import rendering as reporting
from cnnlab.training import checkpoint, parallel, preemption, tasks
from cnnlab.training.metric_writer import MetricWriter

SUMMARY = "summary.json"
PENDING = "pending_metrics.json"


class Runs:
  """The trainings one program advances: `fit`'s single run, or one run per seed of a stacked state (`fit_seeds`).

  Every run keeps the single-seed layout in its own workdir (checkpoints of its unstacked state, metrics.jsonl,
  pending metrics, summary.json), so stacked and single runs read, restore and resume each other's files.
  """

  def __init__(self, workdirs: Sequence[str], keep: int, seeds: Sequence[int] | None = None):
    self.workdirs, self.seeds = list(workdirs), None if seeds is None else list(seeds)
    self.ckpts = [checkpoint.Checkpointer(os.path.join(w, "checkpoints"), keep) for w in self.workdirs]

  @property
  def stacked(self) -> bool:
    return self.seeds is not None

  def label(self, i: int) -> str:
    return f" in seed index {i} (seed {self.seeds[i]}, {self.workdirs[i]})" if self.stacked else ""

  def step(self, state) -> int:
    return int(jax.device_get(state.step)[0]) if self.stacked else int(state.step)

  def unstack(self, tree) -> list:
    """Each run's part of `tree` (arrays with a leading seed axis when stacked)."""
    if not self.stacked:
      return [tree]
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(len(self.workdirs))]

  def save(self, step: int, state) -> None:
    for ckpt, s in zip(self.ckpts, self.unstack(state)):
      ckpt.save(step, s)

  def close(self) -> None:
    for ckpt in self.ckpts:
      ckpt.close()


def _fetch(records: list[dict], runs: int | None) -> list[list[dict]]:
  """Per run, per-step metric dicts of host floats, from per-step dicts of device scalars (or (runs,) arrays).

  Stacked on the device first: one transfer per metric instead of one per step and metric (fetching scalars
  one by one cost a sizeable share of a small MLP's step).
  """
  if len(records) == 1:
    host = {k: np.asarray(v)[None] for k, v in jax.device_get(records[0]).items()}
  else:
    host = jax.device_get({k: jnp.stack([r[k] for r in records]) for k in records[0]})
  steps = range(len(records))
  if runs is None:
    return [[{k: float(v[t]) for k, v in host.items()} for t in steps]]
  return [[{k: float(v[t, i]) for k, v in host.items()} for t in steps] for i in range(runs)]


class _StepMetrics:
  """Each step's metrics, from the device to the log windows and the hooks, per run.

  Holds the host floats of steps (end - len(recent), end] that a log window or a hook has not consumed yet;
  they survive a preemption in each run's `PENDING` file, so a resumed run logs and hooks exactly what an
  uninterrupted one would.
  """

  def __init__(self, runs: Runs, start: int):
    self.runs, self.end, self.unfetched = runs, start, []
    self.paths = [os.path.join(w, PENDING) for w in runs.workdirs]
    self.recent = [self._saved(p, start) for p in self.paths]

  @staticmethod
  def _saved(path: str, start: int) -> list[dict]:
    if not os.path.exists(path):
      return []
    saved = reporting.read_json(path)
    return saved["metrics"] if saved["step"] == start else []

  def add(self, metrics: dict) -> None:
    self.unfetched.append(metrics)
    self.end += 1

  def fetch(self) -> None:
    """Brings the unfetched steps to the host; a NaN/inf loss or gradient norm in any run stops training here."""
    if not self.unfetched:
      return
    first = self.end - len(self.unfetched)
    fetched = _fetch(self.unfetched, len(self.paths) if self.runs.stacked else None)
    for t in range(len(self.unfetched)):
      bad = [(i, {k: r[t][k] for k in ("loss", "grad_norm") if k in r[t] and not math.isfinite(r[t][k])})
             for i, r in enumerate(fetched)]
      bad = [(i, b) for i, b in bad if b]
      if bad:
        last = self.runs.ckpts[bad[0][0]].latest_step()
        kept = f"the last good checkpoint (step {last}) is kept" if last is not None else "no checkpoint was written"
        where = "; ".join(f"{', '.join(f'{k}={v}' for k, v in b.items())}{self.runs.label(i)}" for i, b in bad)
        where_dir = self.runs.workdirs[0] if not self.runs.stacked else "each seed's workdir"
        raise TrainingDiverged(f"training diverged at step {first + t + 1} ({where}); {kept} in {where_dir}; "
                               "lower train.learning_rate")
    for recent, r in zip(self.recent, fetched):
      recent.extend(r)
    self.unfetched = []

  def since(self, step: int) -> list[list[dict]]:
    """Per run, the fetched metrics of the steps after `step`."""
    return [recent[max(0, len(recent) - (self.end - step)):] for recent in self.recent]

  def keep_since(self, step: int) -> None:
    self.recent = self.since(step)

  def save(self) -> None:
    for path, recent in zip(self.paths, self.recent):
      reporting.write_json(path, {"step": self.end, "metrics": recent})


STAMP = "trained_with.json"
# Fields that change how a run is logged, saved, shown or batched with other seeds, not what it trains; and `steps`,
# so that a finished run can be continued for longer (with a decaying schedule that continuation is a new run's job).
UNSTAMPED = ("steps", "log_every", "eval_every", "eval_batch_size", "checkpoint_every", "keep_checkpoints",
             "progress", "tensorboard", "seed_group", "seed_devices", "seed_batching")


def check_stamp(workdir: str, config) -> None:
  """Records the config a run is trained with; refuses to continue or reuse a run trained with another one."""
  path = os.path.join(workdir, STAMP)
  current = {k: v for k, v in json.loads(config.to_json_best_effort()).items() if k not in UNSTAMPED}
  recorded = workdirs.read_record(path)
  if recorded is not None:
    changed = sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))
    if changed:
      raise UserError(f"{workdir} holds a training run made with another config (train fields "
                      f"{', '.join(changed)}); its checkpoints cannot stand for this one: use a new --workdir")
  else:
    reporting.write_json(path, current)


def finished_summary(workdir: str, step: int, steps: int) -> dict | None:
  """The summary of a run that finished at `step` (all `steps`, or stopped early by a hook), else None."""
  summary = workdirs.read_record(os.path.join(workdir, SUMMARY))  # a damaged one is moved aside: re-evaluated
  if summary is None:
    return None
  done = summary["steps"] == step and (step == steps or summary.get("stopped_early", False))
  return summary if done else None


def finished(workdir: str, steps: int) -> bool:
  """Whether a run of `steps` steps in `workdir` finished (as `fit` would then restore rather than train it)."""
  summary = workdirs.read_record(os.path.join(workdir, SUMMARY))
  if summary is None:
    return False
  return summary["steps"] == steps or summary.get("stopped_early", False)


def run_steps(config, runs: Runs, hooks, program, state, step_rng, evaluate, mesh) -> tuple[Any, bool]:
  """Steps from the restored step to `config.steps` or a hook's stop; returns (state, whether a hook stopped it)."""
  start = runs.step(state)
  writers = [MetricWriter(w, resume_step=start, tensorboard=config.tensorboard) for w in runs.workdirs]
  block = parallel.needs_blocking(mesh)
  trace = _StepMetrics(runs, start)
  logged, called = start - start % config.log_every, [start - start % h.every for h in hooks]
  desc = os.path.basename(runs.workdirs[0]) + (f" +{len(runs.workdirs) - 1} seeds" if runs.stacked else "")
  bar = tqdm(total=config.steps, initial=start, disable=not config.progress, leave=False, desc=desc)
  stopped = False
  try:
    with preemption.catch_termination() as stop:
      if stop.requested:  # signalled before this training started (e.g. while compiling)
        raise Preempted(start, stop.signum, _where(runs))
      for step in range(start, config.steps):
        state, metrics = program.step(state, *next(program.inputs), step_rng)
        if block:
          jax.block_until_ready(metrics)
        trace.add(metrics)
        done = step + 1
        due = [i for i, h in enumerate(hooks) if done % h.every == 0 or done == config.steps]
        log = done % config.log_every == 0 or done == config.steps
        if due or log or done % config.checkpoint_every == 0 or done == config.steps or stop.requested:
          trace.fetch()
        stopped = any([bool(hooks[i].fn(done, state, trace.since(called[i])[0])) for i in due])
        called = [done if i in due else c for i, c in enumerate(called)]
        last = done == config.steps or stopped
        if log or last:
          losses_ = []
          for writer, window in zip(writers, trace.since(logged)):
            means = {f"train_{k}": float(np.mean([r[k] for r in window])) for k in window[0]}
            if len(window) < done - logged:  # resumed after a hard kill lost this window's earlier steps: say so
              means["train_window_steps"] = len(window)
            writer.write(done, means)
            losses_.append(means["train_loss"])
          bar.set_postfix(loss=f"{np.mean(losses_):.3f}")
          logged = done
        trace.keep_since(min([logged, *called]))
        if config.eval_every and (done % config.eval_every == 0) and not last:
          for writer, values in zip(writers, evaluate(state, ("test",))):
            writer.write(done, {f"test_{k}": v for k, v in values.get("test", {}).items()})
        if done % config.checkpoint_every == 0 or last or stop.requested:
          trace.save()
          runs.save(done, state)
        bar.update(1)
        if stopped:
          break
        if stop.requested and not last:
          raise Preempted(done, stop.signum, _where(runs))
  finally:
    bar.close()
    for writer in writers:
      writer.close()
  return state, stopped


def _where(runs: Runs) -> str:
  return runs.workdirs[0] if not runs.stacked else os.path.commonpath(runs.workdirs)


def finish(config, runs: Runs, state, evaluate, stopped: bool) -> list[dict]:
  """Final evaluation, its metrics line, and summary.json (whose presence marks the run finished), per run."""
  done = runs.step(state)
  summaries = []
  for workdir, values, run_state in zip(runs.workdirs, evaluate(state, tasks.SPLITS), runs.unstack(state)):
    final = {f"{split}_{k}": v for split, split_values in values.items() for k, v in split_values.items()}
    if final:
      writer = MetricWriter(workdir, resume_step=done, tensorboard=config.tensorboard)
      writer.write(done, {f"final_{k}": v for k, v in final.items()})
      writer.close()
    pending = os.path.join(workdir, PENDING)
    if os.path.exists(pending):
      os.remove(pending)
    summary = {"steps": done, **final, "params": analysis.count_params(run_state.params)}
    if stopped:
      summary["stopped_early"] = True
    reporting.write_json(os.path.join(workdir, SUMMARY), summary)
    summaries.append(summary)
  return summaries
