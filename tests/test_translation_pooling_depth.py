"""translation, pooling and depth_and_gradients: quick runs end to end, and their judges on synthetic results.

The quick runs are smoke tests (no verdicts); the judges are tested on results dicts built here, one supported,
one refuted and one inconclusive (or partly supported) case each.
"""

import os

import numpy as np
import pytest

import experiments
import synthetic_outcomes
from cnnlab.errors import UserError
from cnnlab.metrics import gradients
from cnnlab.report import ledger, rendering as reporting, stats, verdicts

SUPPORTED, REFUTED, INCONCLUSIVE, PARTLY = stats.SUPPORTED, stats.REFUTED, stats.INCONCLUSIVE, stats.PARTLY


def _findings(name: str, workdir: str, smoke_test: bool | None = None) -> dict:
  """Each claim's finding, computed by its judge from the stored results.json (`smoke_test` overridden if given)."""
  stored = reporting.read_json(os.path.join(workdir, "results.json"))
  if smoke_test is not None:
    stored["smoke_test"] = smoke_test
  return {c.id: c.assess(stored) for c in experiments.get(name).CLAIMS}


def _seeded(mean: float, sd: float, n: int = 10, seed: int = 0) -> list[float]:
  """n per-seed values with this mean and sample standard deviation (exactly)."""
  z = np.random.default_rng(seed).standard_normal(n)
  z = (z - z.mean()) / z.std(ddof=1)
  return (mean + sd * z).tolist()


def _verdict(name: str, claim_id: str, results: dict) -> str:
  claim = next(c for c in experiments.get(name).CLAIMS if c.id == claim_id)
  return claim.assess(results).verdict


def _finding_figure(name: str, claim_id: str, results: dict) -> str:
  return next(c for c in experiments.get(name).CLAIMS if c.id == claim_id).assess(results).figure


def _with(config, **fields):
  for k, v in fields.items():
    config[k] = v
  return config


@pytest.mark.parametrize("name", ["translation", "pooling", "depth_and_gradients"])
def test_standard_config_has_ten_seeds_and_rejects_a_negative_seed_base(name):
  module = experiments.get(name)
  config = module.get_config()
  assert (config.seeds, config.seed_base) == (10, 0)
  module.validate_config(config)
  with pytest.raises(UserError, match="seed_base"):
    module.validate_config(_with(config, seed_base=-1))


def test_translation_rejects_an_unknown_augmentation_or_probe_stack_and_can_drop_its_arm():
  module = experiments.get("translation")
  with pytest.raises(UserError, match="unknown augmentation"):
    module.validate_config(_with(module.get_config(), augment_arm="shift:4"))
  with pytest.raises(UserError, match="unknown probe stacks"):
    module.validate_config(_with(module.get_config(), probe_stacks=("maxpool", "avgpool")))
  module.validate_config(_with(module.get_config(), augment_arm=""))  # no augmented arm


def test_every_statistical_claim_declares_the_rule_its_judge_uses():
  for name in ("translation", "pooling", "depth_and_gradients"):
    for c in experiments.get(name).CLAIMS:
      assert c.rule is None or c.rule.describe() in c.describe_rule()
  rules = {c.id: c.rule for n in ("translation", "pooling", "depth_and_gradients") for c in experiments.get(n).CLAIMS}
  assert rules["translation_equivariance"] is None  # exact: float rounding, not a statistical comparison
  assert rules["recognise_anywhere"].comparison == "equivalent"


# --- translation -------------------------------------------------------------------------------------------------


@pytest.mark.slow  # ~1 min on 2 cores (12 more trainings than the quick run)
def test_translation_tunes_a_rate_per_net_and_trains_the_augmented_twin_at_it(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from cnnlab import runner  # pylint: disable=g-import-not-at-top
  module = experiments.get("translation")
  config = _with(module.get_config(quick=True), lr_grid=(1e-3, 1e-2), tuning_seeds=2)  # as standard: several
  config.train.progress = False
  r = runner.run_experiment(module, config, str(tmp_path))
  rates = r["learning_rates"]
  assert set(rates) == {"mlp", *module.CNNS} and all(v["chosen"] in (1e-3, 1e-2) for v in rates.values())
  for m, v in rates.items():  # the highest mean minus one standard error (tuning.choose)
    assert v["seeds"] == 2 and v["chosen"] == _chosen(v)
  assert len(os.listdir(tmp_path / "tuning" / "trials")) == 2 * 2 * len(rates)
  trained = lambda name: json.load(open(tmp_path / "trials" / name / "trained_with.json"))  # noqa: E731
  for m in module.AUGMENTED:
    assert trained(f"{m}+aug_s0")["learning_rate"] == trained(f"{m}_s0")["learning_rate"] == rates[m]["chosen"]
  assert "validation split" in open(tmp_path / "results.md").read()


@pytest.mark.slow  # 1-2 min on 2 cores: run by .ci/run after the default suite
def test_translation(run_quick):
  config, r, md, workdir = run_quick("translation")
  assert os.path.exists(os.path.join(workdir, "accuracy_vs_shift.png"))
  eq = r["equivariance"]
  # Stride-1 circular conv is exactly equivariant at every depth; stride 2 is not for a 1-px shift.
  assert all(np.mean(v) < config.exact_tol for k, v in eq.items() if k.startswith("stride1 / CIRCULAR"))
  assert all(np.mean(v) > 0.05 for k, v in eq.items() if k.startswith("stride2 / CIRCULAR") and "1 px" in k)
  module = experiments.get("translation")
  assert len(r["records"]) == (len(module.MODEL_LABELS) + len(module.AUGMENTED)) * config.seeds
  # The augmented arm: the same nets, seeds and batches, trained on randomly translated digits.
  by = {(rec["model"], rec["seed"]): rec for rec in r["records"]}
  for m in module.AUGMENTED:
    assert r["params"][f"{m}+aug"] == r["params"][m]
    assert by[(f"{m}+aug", 0)]["train_loss"] != by[(m, 0)]["train_loss"]
  assert f"trained with {config.augment_arm}" in md and "## 4. Trained on centred vs randomly translated" in md
  for rec in r["records"]:  # kept: mean accuracy over shifts 1..k minus accuracy at 0, from per-digit scores
    shifted = [rec[f"acc_shift{s}"] for s in range(1, config.max_shift + 1)]
    assert rec["kept"] == pytest.approx(np.mean(shifted) - rec["acc_shift0"], abs=1e-9)
    assert 0 <= rec["kept_se"] < 0.1 and 0 <= rec["train_accuracy"] <= 1
  for pooled, control in module.CONTROLS.items():  # the controls have the pooled nets' parameters exactly
    assert r["params"][pooled] == r["params"][control]
  assert "smoke test" in md
  assert all(f.verdict == ledger.SMOKE_TEST for f in _findings("translation", workdir).values())
  # Judged as if standard: the exact claim follows from the probe's counts.
  exact = [np.mean(v) < config.exact_tol for v in eq.values()]
  finding = _findings("translation", workdir, smoke_test=False)["translation_equivariance"]
  assert finding.verdict == verdicts.from_counts(sum(exact), len(exact))


def _translation_results(kept: dict, sd: float = 0.002, kept_se: float = 0.001, consistency=None,
                         n_test: int = 360) -> dict:
  models = ("cnn_flat", "cnn_flat_stride", "cnn_gap", "cnn_gap_stride", "cnn_gap_blur")
  consistency = {**{m: (0.9, 0.01) for m in models}, **(consistency or {})}
  return {"n_test": n_test, "accuracy_vs_shift": {f"{m}@{s}": _seeded(0.9, 0.01) for m in models for s in (0, 4)},
          "kept": {m: _seeded(kept[m], sd, seed=i) for i, m in enumerate(models)},
          "kept_se": {m: [kept_se] * 10 for m in models},
          "consistency": {m: _seeded(*consistency[m], seed=i) for i, m in enumerate(models)}}


def test_translation_pooling_invariance_judge():
  judge = lambda kept, **kw: _verdict("translation", "pooling_invariance", _translation_results(kept, **kw))
  base = {"cnn_gap_blur": 0.0}
  # Pooled nets keep 10 points more than their stride-2 controls, under both heads.
  assert judge({**base, "cnn_flat": -0.10, "cnn_flat_stride": -0.20, "cnn_gap": 0.0, "cnn_gap_stride": -0.10}) \
      == SUPPORTED
  # No difference, measured precisely: pooling does not add invariance.
  assert judge({**base, "cnn_flat": -0.10, "cnn_flat_stride": -0.10, "cnn_gap": 0.0, "cnn_gap_stride": 0.0}) \
      == REFUTED
  # A small difference in noisy seeds decides nothing.
  assert judge({**base, "cnn_flat": -0.09, "cnn_flat_stride": -0.10, "cnn_gap": 0.0, "cnn_gap_stride": -0.01},
               sd=0.05) == INCONCLUSIVE


def test_translation_recognise_anywhere_judge_reads_the_gap_nets_only():
  judge = lambda gap, blur, **kw: _verdict("translation", "recognise_anywhere", _translation_results(
      {"cnn_flat": -0.5, "cnn_flat_stride": -0.5, "cnn_gap": gap, "cnn_gap_stride": -0.5, "cnn_gap_blur": blur},
      **kw))
  assert judge(-0.002, 0.001) == SUPPORTED  # the flatten-head nets' losses do not count against the claim
  assert judge(-0.15, -0.10) == REFUTED
  assert judge(-0.01, -0.01, sd=0.03) == INCONCLUSIVE
  # The test set's error enters: a 360-digit test set with a large per-digit spread cannot show equivalence.
  assert judge(-0.002, 0.001, kept_se=0.02) == INCONCLUSIVE


def test_translation_blurpool_judge():
  judge = lambda blur, n_test=100_000, sd=0.005: _verdict("translation", "blurpool_consistency", _translation_results(
      {m: 0.0 for m in ("cnn_flat", "cnn_flat_stride", "cnn_gap", "cnn_gap_stride", "cnn_gap_blur")},
      consistency={"cnn_gap": (0.85, sd), "cnn_gap_blur": (blur, sd)}, n_test=n_test))
  assert judge(0.90) == SUPPORTED
  assert judge(0.85) == REFUTED
  assert judge(0.90, n_test=360) == INCONCLUSIVE  # 5 points, but 360 test digits cannot resolve them


# --- pooling -----------------------------------------------------------------------------------------------------


@pytest.mark.slow  # ~1 min on 2 cores: run by .ci/run after the default suite
def test_pooling(run_quick, monkeypatch):
  module = experiments.get("pooling")
  get_config = module.get_config
  monkeypatch.setattr(module, "get_config", lambda quick=False: _with(get_config(quick), seed_base=3))
  config, r, md, workdir = run_quick("pooling")
  assert sorted({rec["seed"] for rec in r["records"]}) == [3, 4]  # seeds seed_base .. seed_base + seeds - 1
  assert set(r["image_consistency"]) == set(config.variants)
  assert all(0.0 <= c <= 1.0 for v in r["mnist1d_consistency"].values() for c in v)
  # Equal heads: every variant has the same parameters (GAP head; no variant adds weights).
  assert len(set(r["params_1d"].values())) == len(set(r["params_2d"].values())) == 1
  assert set(r["mnist1d_train_accuracy"]) == set(r["mnist1d_test_accuracy"])
  assert "smoke test" in md and "train / test" in md
  assert all(f.verdict == ledger.SMOKE_TEST for f in _findings("pooling", workdir).values())
  assert all(f.verdict in ledger.VERDICTS for f in _findings("pooling", workdir, smoke_test=False).values())


@pytest.mark.slow  # ~1.5 min on 2 cores (12 tuning trainings more than the quick run)
def test_pooling_tunes_a_rate_per_variant_and_data_set(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from cnnlab import runner  # pylint: disable=g-import-not-at-top
  module = experiments.get("pooling")
  config = _with(module.get_config(quick=True), lr_grid=(1e-3, 1e-2), seeds=1)
  config.train.progress = False
  r = runner.run_experiment(module, config, str(tmp_path))
  for where in ("1d", "2d"):
    table = r["learning_rates"][where]
    assert set(table) == set(config.variants)
    for v, t in table.items():  # the highest mean minus one standard error (tuning.choose)
      assert t["chosen"] == _chosen(t)
      trained = json.load(open(tmp_path / "trials" / f"{where}_{v}{'_f1.0' if where == '1d' else ''}_s0" /
                               "trained_with.json"))
      assert trained["learning_rate"] == t["chosen"]
    assert len(os.listdir(tmp_path / where / "tuning" / "trials")) == 2 * len(table)
  assert "validation split" in open(tmp_path / "results.md").read()


def _pooling_results(acc: dict, sd: float = 0.005, n_test: int = 100_000) -> dict:
  """MNIST-1D at two sizes and 2-D digits; variant v's accuracy is acc[v] everywhere (per-seed noise sd)."""
  one = {f"{v}@{f}": _seeded(a, sd, seed=i + 7 * j) for i, (v, a) in enumerate(acc.items())
         for j, f in enumerate(("0.5", "1.0"))}
  two = {v: _seeded(a, sd, seed=50 + i) for i, (v, a) in enumerate(acc.items())}
  return {"n_train": {"0.5": 2000, "1.0": 4000}, "n_test_1d": n_test, "n_test_2d": n_test,
          "mnist1d_test_accuracy": one, "image_test_accuracy": two,
          "mnist1d_test_correct": synthetic_outcomes.outcomes(one, n_test),
          "image_test_correct": synthetic_outcomes.outcomes(two, n_test, seed=1)}


def test_pooling_helps_judge_covers_no_downsampling_and_strided_conv():
  judge = lambda acc, **kw: _verdict("pooling", "pooling_helps", _pooling_results(acc, **kw))
  assert judge({"none": 0.70, "stride": 0.72, "max": 0.82, "avg": 0.80}) == SUPPORTED
  assert judge({"none": 0.80, "stride": 0.80, "max": 0.80, "avg": 0.80}) == REFUTED
  # Pools beat no downsampling but not the strided conv: the claim's second half fails.
  assert judge({"none": 0.70, "stride": 0.82, "max": 0.82, "avg": 0.82}) == PARTLY
  assert judge({"none": 0.80, "stride": 0.80, "max": 0.81, "avg": 0.81}, sd=0.05, n_test=1000) == INCONCLUSIVE


def test_max_beats_average_judge():
  judge = lambda mx, av, **kw: _verdict("pooling", "max_beats_average",
                                        _pooling_results({"none": 0.7, "max": mx, "avg": av}, **kw))
  assert judge(0.85, 0.80) == SUPPORTED
  assert judge(0.782, 0.780) == REFUTED  # the MNIST-1D authors' 0.2 points, measured precisely, is below a point
  assert judge(0.782, 0.780, n_test=1000) == INCONCLUSIVE  # ... but not on a 1,000-example test set
  assert "1,000 ex." in _finding_figure("pooling", "max_beats_average", _pooling_results(
      {"max": 0.85, "avg": 0.8}) | {"n_train": {"0.5": 500, "1.0": 1000}})


# --- depth_and_gradients -----------------------------------------------------------------------------------------


@pytest.mark.slow  # 1-2 min on 2 cores: run by .ci/run after the default suite
def test_depth_and_gradients(run_quick):
  config, r, md, workdir = run_quick("depth_and_gradients")
  rows = r["init_rows"]
  assert len(rows) == (len(config.families) * len(config.variants) * len(config.inits) * len(config.init_depths)
                       * config.seeds)
  assert all(len(row["norms"]) == row["depth"] and min(row["norms"]) > 0 for row in rows)
  d = max(config.init_depths)
  for f in config.families:
    for v in config.variants:
      for i in config.inits:
        ratios = [np.log10(row["norms"][0] / row["norms"][-1]) for row in rows
                  if (row["family"], row["variant"], row["init"], row["depth"]) == (f, v, i, d)]
        np.testing.assert_allclose(r["init_log10_ratio"][f"{f}/{v}/{i}/d{d}"], ratios, rtol=1e-6)
  # Different initialisers draw different weights, so their gradients differ.
  assert r["init_log10_ratio"][f"mlp/plain/lecun/d{d}"] != r["init_log10_ratio"][f"mlp/plain/he/d{d}"]
  assert all(0 < loss for losses in r["train_loss"].values() for loss in losses)
  assert "smoke test" in md and "train loss" in md
  finding = _findings("depth_and_gradients", workdir)["cnns_prevent_vanishing_gradients"]
  assert finding.verdict == ledger.SMOKE_TEST and f"— {finding.verdict}.** {finding.figure}" in md


def _depth_results(mlp: tuple[float, float], cnn: tuple[float, float]) -> dict:
  """Plain nets' spreads (mean, sd over seeds) at depth 32 under every initialiser; a shallower depth beside."""
  ratio = {f"{f}/plain/{i}/d{d}": _seeded(*spread, seed=k) for k, (f, spread) in enumerate((("mlp", mlp), ("cnn", cnn)))
           for i in ("lecun", "he", "orthogonal") for d in (2, 32)}
  return {"init_log10_ratio": ratio}


def test_depth_judge():
  judge = lambda mlp, cnn: _verdict("depth_and_gradients", "cnns_prevent_vanishing_gradients",
                                    _depth_results(mlp, cnn))
  assert judge((-4.0, 0.2), (0.1, 0.2)) == SUPPORTED  # the MLP's gradients vanish by 4 decades, the CNN's do not
  assert judge((0.2, 0.2), (-0.1, 0.3)) == REFUTED    # neither vanishes: no decade for the CNN to win
  assert judge((-1.5, 1.5), (0.0, 0.3)) == INCONCLUSIVE


def test_block_grad_norms_match_a_direct_gradient(digits):
  import jax
  import optax
  from cnnlab.training import parallel, state as state_lib
  from experiments import depth_and_gradients
  config = depth_and_gradients.get_config(quick=True)  # the quick run's model and optimizer: no new compile
  depth = config.train_depths[0]
  net = depth_and_gradients._model(config, "mlp", "plain", depth, digits.num_classes)  # pylint: disable=protected-access
  tx = state_lib.make_optimizer(config.train)
  state = state_lib.create_train_state(net, tx, jax.random.key(0), digits.example_shape, parallel.make_mesh())
  x, y = digits.x_train[:config.grad_examples], digits.y_train[:config.grad_examples]
  loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(net.apply({"params": p}, x), y).mean()
  g = jax.grad(loss)(state.params)["blocks"]["layer"]["kernel"]  # weights only: biases are left out
  want = [float(np.linalg.norm(g[i])) for i in range(depth)]
  np.testing.assert_allclose(gradients.block_grad_norms(state, depth, x, y), want, rtol=1e-5)


def test_probe_stacks_are_exactly_equivariant_only_where_nothing_subsamples_between_shifts():
  from cnnlab.ops import equivariance
  x = np.random.default_rng(0).random((2, 16, 16, 1)).astype(np.float32)
  rows = equivariance.probe(("stride1", "maxpool"), features=4, depth=2, seeds=[0], x_digits=x)
  assert len(rows) == 2 * 2 * 2 * 2 * 2  # stacks x paddings x inputs x layers x shifts
  err = {(r["stack"], r["padding"], r["input"], r["depth"], r["shift"]): r["error"] for r in rows}
  assert max(e for k, e in err.items() if k[:2] == ("stride1", "CIRCULAR")) < 1e-5
  assert err["maxpool", "CIRCULAR", "noise", 1, "stride"] < 1e-5  # a 2 px shift moves the pooled map by 1
  assert err["maxpool", "CIRCULAR", "noise", 1, "1 px"] > 0.1     # a 1 px shift falls between pooled positions


def _chosen(table: dict) -> float:
  """The rate `tuning.choose` picks from a tuning table's per-seed validation accuracies."""
  from cnnlab.training import tuning  # pylint: disable=g-import-not-at-top
  return tuning.choose({float(r): a for r, a in table["validation_accuracy_seeds"].items()},
                       table["n_validation"])[0]
