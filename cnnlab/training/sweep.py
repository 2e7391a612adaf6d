"""Many trainings in one experiment: each trial in its own sub-workdir, resumable, with one progress bar."""

import dataclasses
import os
from collections import defaultdict
from typing import Any, Callable, Iterable, Sequence

import flax.linen as nn
import ml_collections
from tqdm import tqdm

from cnnlab.training import loop, tasks, train
from cnnlab.training.hooks import Hook


@dataclasses.dataclass
class Trial:
  """One training run: `tags` (e.g. model, fraction, seed) label its row of results."""
  name: str
  model: nn.Module
  dataset: Any                # a `cnnlab.data.Dataset`, or what `task` trains on
  seed: int
  config: ml_collections.ConfigDict
  tags: dict[str, Any]
  # Measurements of the trained state, merged into the trial's record: (state, dataset) -> dict. A finished
  # trial is restored from its final checkpoint, so they are recomputed without retraining.
  after_fit: Callable[[Any, Any], dict] | None = None
  task: tasks.Task = tasks.SUPERVISED
  hooks: Sequence[Hook] = ()


def trial_dir(workdir: str, trial: Trial) -> str:
  """Where `run_trials` trains `trial`: checkpoints, metrics.jsonl, summary.json."""
  return os.path.join(workdir, "trials", trial.name)


def run_trials(workdir: str, trials: Sequence[Trial], progress: bool = True) -> list[dict]:
  """Fits every trial (finished ones are loaded, interrupted ones resume); returns one record per trial, in order.

  A record is the trial's tags, its seed, `fit`'s summary, then what its `after_fit` returns. Unfinished trials
  that `seed_groups` puts together train as one seeded program (`train.fit_seeds`), each in its own trial dir.
  """
  records: list[dict | None] = [None] * len(trials)
  bar = tqdm(total=len(trials), disable=not progress, desc="trials", unit="run")
  for group in seed_groups(workdir, trials):
    first = trials[group[0]]
    bar.set_postfix_str(first.name + (f" +{len(group) - 1} seeds" if len(group) > 1 else ""))
    config = ml_collections.ConfigDict(first.config.to_dict())
    config.progress = progress
    if len(group) == 1:
      state, summary = train.fit(config, first.model, first.dataset, trial_dir(workdir, first), first.seed,
                                 task=first.task, hooks=first.hooks)
      fitted = [(state, summary)]
    else:
      members = [trials[i] for i in group]
      fitted = list(zip(*train.fit_seeds(config, first.model, [t.dataset for t in members],
                                         [trial_dir(workdir, t) for t in members], [t.seed for t in members])))
    for i, (state, summary) in zip(group, fitted):
      trial = trials[i]
      record = {**trial.tags, "seed": trial.seed, **summary}
      if trial.after_fit is not None:
        record.update(trial.after_fit(state, trial.dataset))
      records[i] = record
    bar.update(len(group))
  bar.close()
  return records


def _shapes(dataset: Any) -> tuple:
  return tuple((a.shape, str(a.dtype)) for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test))


def seed_groups(workdir: str, trials: Sequence[Trial]) -> list[list[int]]:
  """Indices of `trials`, grouped for training: each group one program, in the order of its first trial.

  Unfinished supervised trials without hooks that share the model, the config and their data's shapes train
  together, `train.seed_group(config)` at most (they differ in seed and in the data drawn with it; each seed keeps
  its own draws, so grouping changes only float rounding). Every other trial is a group of its own.
  """
  groups: dict[Any, list[list[int]]] = {}
  order: list[list[int]] = []
  for i, t in enumerate(trials):
    key = None
    size = train.seed_group(t.config)
    if (t.task is tasks.SUPERVISED and not t.hooks and size > 1 and hasattr(t.dataset, "x_train")
        and not loop.finished(trial_dir(workdir, t), t.config.steps)):
      key = (t.model, t.config.to_json_best_effort(sort_keys=True), _shapes(t.dataset), t.dataset.num_classes)
    if key is not None and key in groups and len(groups[key][-1]) < size:
      groups[key][-1].append(i)
      continue
    order.append([i])
    if key is not None:
      groups.setdefault(key, []).append(order[-1])
  return order


def group(records: Iterable[dict], keys: Sequence[str], metric: str) -> dict[tuple, list[float]]:
  """Values of `metric` grouped by the tuple of `keys` (e.g. over seeds)."""
  out: dict[tuple, list[float]] = defaultdict(list)
  for r in records:
    out[tuple(r[k] for k in keys)].append(r[metric])
  return dict(out)
