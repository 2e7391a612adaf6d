"""Every trained experiment's quick config: each seed of a seeded training (`train.seed_group`) ends where its
single-seed training ends.

Tolerance: the seeded program sums some ops in another order (batched matmuls; convs run per seed exactly as in
a single-seed run), so float32 rounding differs; over 40 Adam steps (at most) final losses agree to
1e-3 relative and accuracies to one test example in 200 (a rounding flip of one prediction). Measured: equal to
~1e-6 here; the tolerance leaves room for other processors.
"""

import glob
import json
import os

import pytest

import experiments
from cnnlab import runner
from cnnlab.training import train

# Trained experiments whose sweeps group seeds (supervised trials without hooks); DIP fits images by its own task.
GROUPED = ("weight_sharing", "overfitting", "spatial_prior", "translation", "pooling", "localisation", "segmentation")
LOSS_RTOL, ACCURACY_ATOL = 1e-3, 1 / 200
STEPS = 40


def summaries(workdir: str) -> dict[str, dict]:
  return {os.path.relpath(p, workdir): json.load(open(p))
          for p in sorted(glob.glob(os.path.join(workdir, "trials", "*", "summary.json")))}


def run(name: str, workdir: str, seed_group: int) -> dict[str, dict]:
  module = experiments.get(name)
  config = module.get_config(quick=True)
  config.train.progress = False
  config.train.seed_group = seed_group
  # Rounding differences grow with steps (segmentation's 150: one train-accuracy point); 40 keeps them at rounding.
  config.train.steps = min(config.train.steps, STEPS)
  runner.run_experiment(module, config, workdir)
  return summaries(workdir)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n != "weight_sharing" else n
                                  for n in GROUPED])
def test_seeded_training_equals_single_seed_trainings(name, tmp_path, monkeypatch):
  single = run(name, str(tmp_path / "single"), 1)
  groups, fit_seeds = [], train.fit_seeds
  monkeypatch.setattr(train, "fit_seeds", lambda *a, **k: groups.append(len(a[4])) or fit_seeds(*a, **k))
  seeded = run(name, str(tmp_path / "seeded"), 16)
  assert groups and all(g > 1 for g in groups)  # the seeded run did train seeds together
  assert single and single.keys() == seeded.keys()
  for trial, s in single.items():
    t = seeded[trial]
    for key, value in s.items():
      if not isinstance(value, float):
        continue
      tol = dict(abs=ACCURACY_ATOL) if "accuracy" in key or "iou" in key else dict(rel=LOSS_RTOL, abs=1e-6)
      assert t[key] == pytest.approx(value, **tol), f"{trial} {key}"
