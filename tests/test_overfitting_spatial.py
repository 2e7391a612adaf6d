"""overfitting and spatial_prior run end to end (quick configs, smoke tests); their judges decide paired,
test-set-aware comparisons by their declared rules (synthetic results)."""

import os

import numpy as np
import pytest

from cnnlab.errors import UserError
from cnnlab.report import ledger, rendering as reporting, stats
from experiments import overfitting, spatial_prior
import synthetic_outcomes

MODELS = ("cnn", "lcn", "mlp")


def _smoke_findings(module, workdir: str, md: str) -> dict:
  """The quick run's findings from results.json: no verdicts (a smoke test), shown as such in results.md."""
  stored = reporting.read_json(os.path.join(workdir, "results.json"))
  assert stored["smoke_test"] and "Smoke test" in md
  findings = {c.id: c.assess(stored) for c in module.CLAIMS}
  assert {f.verdict for f in findings.values()} == {ledger.SMOKE_TEST}
  assert all(f"— {f.verdict}.** {f.figure}" in md for f in findings.values())
  return findings


@pytest.mark.parametrize("module", [overfitting, spatial_prior])
def test_ten_seeds_and_a_validated_seed_base(module):
  config = module.get_config()
  assert config.seeds == 10 and config.seed_base == 0
  assert module.get_config(quick=True).keys() == config.keys()
  config.seed_base = -1
  with pytest.raises(UserError, match="seed_base"):
    module.validate_config(config)


@pytest.mark.slow  # a trained experiment's quick config (~20-50 s on 2 cores): run by .ci/run after the default suite
def test_overfitting_quick_run(run_quick):
  config, r, md, workdir = run_quick("overfitting")
  for rec in r["records"]:
    assert rec["gap"] == pytest.approx(rec["train_accuracy"] - rec["test_accuracy"])
  assert sorted({rec["seed"] for rec in r["records"]}) == list(range(config.seed_base, config.seed_base + config.seeds))
  _smoke_findings(overfitting, workdir, md)
  assert "train / test / gap" in md and "95 % CI" in md
  # The shared cell (base width, width_fraction) is trained once.
  assert len(os.listdir(os.path.join(workdir, "trials"))) == 3 * config.seeds * (
      len(config.train_fractions) + len(config.width_multipliers) - 1)
  assert os.path.exists(os.path.join(workdir, "learning_curves.png"))


def _overfit_results(extra_gap: dict, train: float = 1.0, n_test: int = 360, spread: float = 0.03) -> dict:
  """Synthetic overfitting results at base width: the CNN's gap plus `extra_gap[model]`, a seed effect shared by
  the models of a seed (its data subset)."""
  rng = np.random.default_rng(0)
  fr, n = [0.1, 0.3, 1.0], {"0.1": 143, "0.3": 431, "1.0": 1437}
  res = {"train_fractions": fr, "n_train": n, "n_test": n_test, "gap": {}, "test_accuracy": {}, "train_accuracy": {}}
  for f in fr:
    shared = rng.normal(0, spread, 10)
    for m in MODELS:
      test = 0.9 - extra_gap.get(m, 0.0) + shared + rng.normal(0, 0.003, 10)
      key = f"{m}@w1.0@f{f}"
      res["train_accuracy"][key], res["test_accuracy"][key] = [train] * 10, list(test)
  correct = synthetic_outcomes.outcomes(res["test_accuracy"], n_test)
  res["test_correct"] = correct
  res["test_accuracy"] = {k: [float(stats.unpack_correct(c).mean()) for c in v] for k, v in correct.items()}
  res["gap"] = {k: [train - a for a in v] for k, v in res["test_accuracy"].items()}
  return res


def _overfit_verdict(results: dict) -> str:
  return overfitting.CLAIMS[0].assess(results).verdict


def test_overfitting_judge_supported_refuted_inconclusive():
  assert _overfit_verdict(_overfit_results({"lcn": 0.08, "mlp": 0.08})) == stats.SUPPORTED
  # Equal gaps, measured on a large test set: the reduction lies wholly under the 1-point margin.
  assert _overfit_verdict(_overfit_results({}, n_test=100_000)) == stats.REFUTED
  # The same equal gaps on the 360-digit test set: not significant is not a refutation.
  assert _overfit_verdict(_overfit_results({})) == stats.INCONCLUSIVE


def test_overfitting_judges_no_size_where_a_net_does_not_fit_its_training_set():
  under = _overfit_results({"lcn": 0.08}, train=0.95)
  finding = overfitting.CLAIMS[0].assess(under)
  assert finding.verdict == stats.INCONCLUSIVE and "not judged (train accuracy 95.0 % < 99 %)" in finding.figure
  one_unfit = _overfit_results({"lcn": 0.08})
  one_unfit["train_accuracy"]["lcn@w1.0@f1.0"] = [0.97] * 10
  assert _overfit_verdict(one_unfit) == stats.PARTLY  # two sizes supported, the third not judged
  rule = overfitting.CLAIMS[0].rule
  assert (rule.comparison, rule.margin, rule.alpha) == ("greater", 0.01, 0.05)


@pytest.mark.slow  # 1-2 min on 2 cores: run by .ci/run after the default suite
def test_spatial_prior_tunes_each_2d_arm_on_a_validation_split(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from cnnlab import runner  # pylint: disable=g-import-not-at-top
  config = spatial_prior.get_config(quick=True)
  config.image.lr_grid, config.seeds, config.train.progress = (1e-3, 1e-2), 1, False
  r = runner.run_experiment(spatial_prior, config, str(tmp_path))
  for d, table in r["learning_rates_2d"].items():
    assert set(table) == {"cnn", "mlp"}
    for m, t in table.items():  # the highest mean minus one standard error (tuning.choose)
      assert t["chosen"] == _chosen(t)
      trained = json.load(open(tmp_path / "trials" / f"2d_{m}_{d[:4]}_s0" / "trained_with.json"))
      assert trained["learning_rate"] == t["chosen"]
    assert len(os.listdir(tmp_path / f"2d_{d}" / "tuning" / "trials")) == 4
  assert set(r["learning_rates_2d"]) == {"original", "permuted"}
  assert "validation split" in open(tmp_path / "results.md").read()


@pytest.mark.slow  # 1-2 min on 2 cores: run by .ci/run after the default suite
def test_spatial_prior_quick_run(run_quick):
  config, r, md, workdir = run_quick("spatial_prior")
  # Quick runs read 8x8 digits as 64-sample signals: logistic = 64 * 10 + 10 parameters.
  assert r["params_1d"]["logistic"] == 650
  assert "6,000" in md  # the deviation from the paper is stated
  assert len(r["records"]) == (8 + 4) * config.seeds
  assert r["mnist1d_train"].keys() == r["mnist1d"].keys() and r["digits_2d_train"].keys() == r["digits_2d"].keys()
  assert r["n_test_2d"] == 360
  _smoke_findings(spatial_prior, workdir, md)


def _spatial_results(acc1: dict, acc2: dict, n_test: int = 100_000, spread: float = 0.01) -> dict:
  """Synthetic spatial_prior results from mean test accuracies ('model@data'), 10 seeds around each."""
  rng = np.random.default_rng(0)
  cells = lambda acc: {k: list(np.clip(v + rng.normal(0, spread, 10), 0, 1)) for k, v in acc.items()}
  c1, c2 = synthetic_outcomes.outcomes(cells(acc1), n_test), synthetic_outcomes.outcomes(cells(acc2), n_test, seed=1)
  mean = lambda c: {k: [float(stats.unpack_correct(x).mean()) for x in v] for k, v in c.items()}
  return {"mnist1d": mean(c1), "digits_2d": mean(c2), "mnist1d_correct": c1, "digits_2d_correct": c2,
          "n_test_1d": n_test, "n_test_2d": n_test}


PAPER_1D = {"logistic@original": 0.32, "mlp@original": 0.68, "cnn@original": 0.94, "gru@original": 0.91,
            "logistic@shuffled": 0.32, "mlp@shuffled": 0.68, "cnn@shuffled": 0.56, "gru@shuffled": 0.57}
IMAGE_2D = {"cnn@original": 0.97, "mlp@original": 0.95, "cnn@permuted": 0.90, "mlp@permuted": 0.95}


def _spatial_verdict(results: dict) -> str:
  return spatial_prior.CLAIMS[0].assess(results).verdict


def test_spatial_prior_judge_supported_refuted_inconclusive():
  assert _spatial_verdict(_spatial_results(PAPER_1D, IMAGE_2D)) == stats.SUPPORTED
  # The CNN and GRU keep their accuracy and the lead when shuffled, and the MLP and logistic model drop 10 points:
  # every part fails (the premise, a CNN lead, holds but supports nothing by itself).
  no_prior_1d = {**PAPER_1D, "cnn@shuffled": 0.94, "gru@shuffled": 0.91, "mlp@shuffled": 0.58,
                 "logistic@shuffled": 0.22}
  no_prior_2d = {**IMAGE_2D, "cnn@permuted": 0.97, "mlp@permuted": 0.85}
  assert _spatial_verdict(_spatial_results(no_prior_1d, no_prior_2d)) == stats.REFUTED
  assert _spatial_verdict(_spatial_results(PAPER_1D, IMAGE_2D, spread=0.3)) == stats.INCONCLUSIVE


def test_spatial_prior_premise_and_equivalence_enter_the_verdict():
  # No CNN lead on the original 2-D data: the premise is not shown, so the claim is at most partly supported.
  tied = {**IMAGE_2D, "cnn@original": 0.95}
  assert _spatial_verdict(_spatial_results(PAPER_1D, tied)) == stats.PARTLY
  # On MNIST-1D's 1,000-signal test set a 2-point band cannot hold the MLP's or the logistic model's interval.
  finding = spatial_prior.CLAIMS[0].assess(_spatial_results(PAPER_1D, IMAGE_2D, n_test=1000))
  assert finding.verdict == stats.PARTLY and "1-D mlp original − shuffled" in finding.figure
  same, direction = spatial_prior._RULE_SAME, spatial_prior.CLAIMS[0].rule  # pylint: disable=protected-access
  assert (same.comparison, same.margin, direction.comparison, direction.margin) == ("equivalent", 0.02, "greater", 0)
  assert same.alpha + direction.alpha == pytest.approx(0.05)


def _chosen(table: dict) -> float:
  """The rate `tuning.choose` picks from a tuning table's per-seed validation accuracies."""
  from cnnlab.training import tuning  # pylint: disable=g-import-not-at-top
  return tuning.choose({float(r): a for r, a in table["validation_accuracy_seeds"].items()},
                       table["n_validation"])[0]
