"""The weight_sharing experiment runs end to end (quick config), writes every file, and does not re-run."""

import json
import os

import experiments
from cnnlab import runner
from cnnlab.report import rendering as reporting


def test_quick_run_writes_everything_and_resumes(tmp_path, capsys):
  module = experiments.get("weight_sharing")
  config = module.get_config(quick=True)
  config.train.progress = False
  workdir = str(tmp_path)
  results = runner.run_experiment(module, config, workdir)
  for name in ("config.json", "results.json", "results.md", "accuracy_vs_size.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  trial_dirs = os.listdir(os.path.join(workdir, "trials"))
  assert len(trial_dirs) == 3 * len(config.train_fractions) * config.seeds
  one = os.path.join(workdir, "trials", trial_dirs[0])
  assert os.path.exists(os.path.join(one, "metrics.jsonl")) and os.listdir(os.path.join(one, "checkpoints"))
  assert any(f.startswith("events") for f in os.listdir(os.path.join(one, "tensorboard")))
  assert json.load(open(os.path.join(workdir, "config.json")))["seeds"] == config.seeds

  # Verdicts are computed from the measured numbers.
  p = results["params"]
  assert p["lcn"] > p["cnn"] and p["mlp"] > p["cnn"]
  expected = "supported" if min(p["lcn"], p["mlp"]) >= config.factor * p["cnn"] else "refuted"
  assert results["verdict_parameter_efficiency"] == expected
  md = open(os.path.join(workdir, "results.md")).read()
  assert results["verdict_sharing_helps_learning"] in md

  capsys.readouterr()
  again = runner.run_experiment(module, config, workdir)
  assert "Finished run found" in capsys.readouterr().out
  assert again == reporting.read_json(os.path.join(workdir, "results.json"))
