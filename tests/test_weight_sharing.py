"""The weight_sharing experiment runs end to end (quick config), writes every file, and does not re-run."""

import json
import os

import experiments
from cnnlab import runner
from cnnlab.report import rendering as reporting, verdicts


def test_quick_run_writes_everything_and_resumes(run_quick, capsys):
  module = experiments.get("weight_sharing")
  config, results, md, workdir = run_quick("weight_sharing")  # also checks: no verdicts or flags in the results
  for name in ("config.json", "results.json", "results.md", "accuracy_vs_size.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  trial_dirs = os.listdir(os.path.join(workdir, "trials"))
  assert len(trial_dirs) == 3 * len(config.train_fractions) * config.seeds
  one = os.path.join(workdir, "trials", trial_dirs[0])
  assert os.path.exists(os.path.join(one, "metrics.jsonl")) and os.listdir(os.path.join(one, "checkpoints"))
  assert any(f.startswith("events") for f in os.listdir(os.path.join(one, "tensorboard")))
  assert json.load(open(os.path.join(workdir, "config.json")))["seeds"] == config.seeds

  # Results hold measurements only; the CLAIMS judges compute each verdict from them, by the rules the ledger states.
  stored = reporting.read_json(os.path.join(workdir, "results.json"))
  p = stored["params"]
  assert p["lcn"] > p["cnn"] and p["mlp"] > p["cnn"]
  acc = stored["test_accuracy"]
  ahead = lambda a, b: sum(verdicts.clearly_greater(acc[f"{a}@{f}"], acc[f"{b}@{f}"]) for f in config.train_fractions)
  n = len(config.train_fractions)
  expected = {"weight_sharing_efficiency": verdicts.from_flag(min(p["lcn"], p["mlp"]) >= config.factor * p["cnn"]),
              "weight_sharing_learns_better": verdicts.from_counts(ahead("cnn", "lcn"), n),
              "local_connectivity": verdicts.from_counts(ahead("lcn", "mlp"), n)}
  findings = {c.id: c.assess(stored) for c in module.CLAIMS}
  assert {k: f.verdict for k, f in findings.items()} == expected
  assert all(f"— {f.verdict}.** {f.figure}" in md for f in findings.values())  # results.md shows the judges' verdicts

  capsys.readouterr()
  again = runner.run_experiment(module, config, workdir)
  assert "Finished run found" in capsys.readouterr().out
  assert again == reporting.read_json(os.path.join(workdir, "results.json"))
