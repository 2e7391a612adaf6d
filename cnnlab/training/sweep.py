"""Many trainings in one experiment: each trial in its own sub-workdir, resumable, with one progress bar."""

import dataclasses
import os
from collections import defaultdict
from typing import Any, Iterable, Sequence

import flax.linen as nn
import ml_collections
from tqdm import tqdm

from cnnlab.training import train
from cnnlab.data import Dataset


@dataclasses.dataclass
class Trial:
  """One training run: `tags` (e.g. model, fraction, seed) label its row of results."""
  name: str
  model: nn.Module
  dataset: Dataset
  seed: int
  config: ml_collections.ConfigDict
  tags: dict[str, Any]


def run_trials(workdir: str, trials: Sequence[Trial], progress: bool = True) -> list[dict]:
  """Fits every trial (finished ones are loaded, interrupted ones resume); returns one record per trial."""
  records = []
  bar = tqdm(trials, disable=not progress, desc="trials", unit="run")
  for trial in bar:
    bar.set_postfix_str(trial.name)
    config = ml_collections.ConfigDict(trial.config.to_dict())
    config.progress = progress
    _, summary = train.fit(config, trial.model, trial.dataset, os.path.join(workdir, "trials", trial.name),
                           trial.seed)
    records.append({**trial.tags, "seed": trial.seed, **summary})
  return records


def group(records: Iterable[dict], keys: Sequence[str], metric: str) -> dict[tuple, list[float]]:
  """Values of `metric` grouped by the tuple of `keys` (e.g. over seeds)."""
  out: dict[tuple, list[float]] = defaultdict(list)
  for r in records:
    out[tuple(r[k] for k in keys)].append(r[metric])
  return dict(out)
