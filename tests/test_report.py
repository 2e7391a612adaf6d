"""The claims ledger and `run.py --report`: every claim gets a verdict computed from results, never a literal."""

import ast
import inspect
import json
import os

import pytest

import experiments
from cnnlab import provenance
from cnnlab.report import build, ledger, render, rendering as reporting

# The claims the ledger must cover (issue #8), by id.
REQUIRED = ("dense_vs_conv_weights", "weight_sharing_efficiency", "ten_billion_weights", "alexnet_60m_weights",
            "alexnet_650k_neurons", "alexnet_300k_first_layer", "local_connectivity", "translation_equivariance",
            "pooling_invariance", "max_beats_average", "conv_arithmetic", "conv_as_dot_products", "gaussian_denoises",
            "derivative_kernels", "image_prior_fitting", "deep_image_prior", "spatial_prior", "dilation_grows_field",
            "cnns_reduce_overfitting", "cnns_prevent_vanishing_gradients", "efficient_parallel")


def all_claims():
  return [(name, c) for name in experiments.names() for c in getattr(experiments.get(name), "CLAIMS", ())]


def test_ledger_covers_the_required_claims_with_unique_ids():
  claims = all_claims()
  ids = [c.id for _, c in claims]
  assert len(ids) == len(set(ids))
  assert not set(REQUIRED) - set(ids)
  for _, c in claims:
    assert isinstance(c, ledger.Claim) and c.text.endswith(".") and c.source and c.metric and callable(c.judge)


def test_no_verdict_is_a_literal():
  """No judge passes a string constant as a Finding's verdict: verdicts come from `verdicts` rules or results."""
  for name in experiments.names():
    tree = ast.parse(inspect.getsource(experiments.get(name)))
    for node in ast.walk(tree):
      if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Finding":
        verdict = node.args[1] if len(node.args) > 1 else next(k.value for k in node.keywords if k.arg == "verdict")
        assert not isinstance(verdict, ast.Constant), f"{name}: literal verdict at line {node.lineno}"


def test_a_judge_without_results_says_not_measured():
  for _, c in all_claims():
    assert c.assess(None).verdict == ledger.NOT_MEASURED
    assert c.assess({}).verdict == ledger.NOT_MEASURED  # every rule reads the results


def _quick_report(tmp_path, names, **overrides):
  config = build.get_config(quick=True)
  config.experiments = names
  config.workers = 1  # in this process: fast, and what the test measures is the bookkeeping
  for k, v in overrides.items():
    config[k] = v
  workdir = str(tmp_path / "report")
  return build.run_report(config, workdir), workdir


def test_quick_report_on_fast_experiments_reuses_and_refreshes_stale_runs(tmp_path):
  names = "param_count,conv_arithmetic"
  out, workdir = _quick_report(tmp_path, names)
  rows = out["claims"]
  expected = [c.id for n in ("param_count", "conv_arithmetic") for c in experiments.get(n).CLAIMS]
  assert [r["id"] for r in rows] == expected
  for r in rows:  # quick configs are smoke tests: numbers, no verdicts
    assert r["verdict"] == ledger.SMOKE_TEST and any(ch.isdigit() for ch in r["figure"]), r
  results = reporting.read_json(os.path.join(workdir, "param_count", "results.json"))
  assert results["smoke_test"] is True
  ten_billion = next(c for c in experiments.get("param_count").CLAIMS if c.id == "ten_billion_weights")
  # The rule itself still computes: 1,966,080,000 < 1e10 once the smoke-test mark is lifted.
  assert ten_billion.assess({**results, "smoke_test": False}).verdict == "refuted"
  md = open(os.path.join(workdir, "REPORT.md")).read()
  assert f"{len(rows)} smoke test (no verdict)" in md and "Smoke test" in md
  assert "## The claims ledger" in md and "## Environment" in md and "`python run.py --exp=param_count`" in md
  assert "## Provenance" in md and provenance.digest(out["experiments"]["param_count"]["provenance"]["code"]) in md
  assert all(r["text"] in md for r in rows)
  # Run again: nothing is re-run. Then make one experiment's config stale: only that one runs again.
  again, _ = _quick_report(tmp_path, names)
  assert {p["status"] for p in again["experiments"].values()} == {"reused"}
  cfg_path = os.path.join(workdir, "conv_arithmetic", "config.json")
  cfg = reporting.read_json(cfg_path)
  cfg["max_input"] += 1
  reporting.write_json(cfg_path, cfg)
  third, _ = _quick_report(tmp_path, names)
  assert third["experiments"]["conv_arithmetic"]["status"] == "ran"
  assert third["experiments"]["param_count"]["status"] == "reused"
  assert any(d.startswith("conv_arithmetic.stale-") for d in os.listdir(workdir))
  assert not os.path.exists(os.path.join(workdir, "report"))  # the report is not an experiment


def test_report_says_which_part_of_the_provenance_changed(tmp_path, monkeypatch, capsys):
  from cnnlab import provenance  # pylint: disable=g-import-not-at-top
  _quick_report(tmp_path, "param_count")
  real = provenance.versions
  monkeypatch.setattr(provenance, "versions", lambda: {**real(), "jax": "0.0.1"})
  out, workdir = _quick_report(tmp_path, "param_count")
  assert out["experiments"]["param_count"]["status"] == "ran"
  assert "versions (jax " in capsys.readouterr().out
  assert any(d.startswith("param_count.stale-") for d in os.listdir(workdir))


def test_run_order_is_slowest_first_by_recorded_time_unknown_first():
  assert build.run_order(["a", "b", "c", "d"], {"a": 5.0, "b": None, "c": 50.0}) == ["b", "d", "c", "a"]


def test_report_refreshes_the_readme_blocks(tmp_path):
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{render.README_BEGIN}\nold\n{render.README_END}\nmiddle\n"
                    f"{render.EXPERIMENTS_BEGIN}\nold table\n{render.EXPERIMENTS_END}\noutro\n")
  _quick_report(tmp_path, "param_count", readme=str(readme))
  text = readme.read_text()
  assert text.startswith("intro\n") and text.endswith("outro\n") and "middle" in text and "old" not in text
  assert "| claim | source | experiment | measured | verdict |" in text and "do not edit by hand" in text
  assert "| experiment | claim tested | command | last run time | finished |" in text
  assert "`python run.py --exp=param_count --quick`" in text and experiments.claim("param_count") in text


def test_a_readme_without_the_markers_is_refused_before_anything_runs(tmp_path):
  from cnnlab.errors import UserError  # pylint: disable=g-import-not-at-top
  readme = tmp_path / "README.md"
  readme.write_text("no markers\n")
  with pytest.raises(UserError, match="block to fill"):
    _quick_report(tmp_path, "param_count", readme=str(readme))
  assert not (tmp_path / "report").exists()


def test_unknown_experiment_is_a_clear_error():
  from cnnlab.errors import UserError  # pylint: disable=g-import-not-at-top
  config = build.get_config()
  config.experiments = "param_count,no_such"
  with pytest.raises(UserError, match="no_such"):
    build.selected(config)


@pytest.mark.slow  # every experiment's quick config: several minutes on 2 cores
def test_full_quick_report_gives_every_claim_a_computed_verdict(tmp_path):
  out, workdir = _quick_report(tmp_path, "")
  assert {p["status"] for p in out["experiments"].values()} == {"ran"}
  assert len(out["claims"]) == len(all_claims())
  for r in out["claims"]:
    assert r["verdict"] == ledger.SMOKE_TEST, r
  for name in out["experiments"]:  # every judge computes a verdict from the quick numbers once they count
    results = reporting.read_json(os.path.join(workdir, name, "results.json"))
    for claim in experiments.get(name).CLAIMS:
      assert claim.assess({**results, "smoke_test": False}).verdict in ledger.VERDICTS, claim.id
  saved = json.load(open(os.path.join(workdir, "report.json")))
  assert saved["counts"][ledger.NOT_MEASURED] == 0


def test_code_hash_ignores_docstrings_and_comments_but_not_code(tmp_path):
  from cnnlab import provenance  # pylint: disable=g-import-not-at-top
  def digest(text, name):
    path = tmp_path / name
    path.write_text(text)
    return provenance.code_hash(str(path))
  base = digest('"""Doc."""\n\ndef f():\n  """Doc."""\n  return 1\n', "a.py")
  assert digest('"""Other doc."""\n# a comment\ndef f():\n  """New."""\n  return 1\n', "b.py") == base
  assert digest('"""Doc."""\n\ndef f():\n  """Doc."""\n  return 2\n', "c.py") != base


def test_a_second_seed_set_marks_claims_whose_verdicts_differ_unstable(tmp_path):
  first, workdir = _quick_report(tmp_path, "param_count", quick=False)  # counts parameters: verdicts in seconds
  other = dict(first, claims=[dict(r) for r in first["claims"]])
  other["claims"][0]["verdict"] = "refuted" if other["claims"][0]["verdict"] != "refuted" else "supported"
  other["claims"][1]["verdict"] = ledger.NOT_MEASURED  # e.g. its experiment failed there: nothing to compare
  other_path = tmp_path / "other.json"
  reporting.write_json(str(other_path), other)
  out, _ = _quick_report(tmp_path, "param_count", quick=False, compare_to=str(other_path))
  rows = out["claims"]
  assert [r["stable"] for r in rows] == [False, None] + [True] * (len(rows) - 2)
  md = open(os.path.join(workdir, "REPORT.md")).read()
  assert md.count("**unstable**") == 1 and "1 unstable, 1 without a verdict on one of them" in md
  assert "(both seed sets)" in md and "(not compared: not measured on the other seed set)" in md


def test_seed_base_gets_its_own_workdir_and_compare_to_is_checked_first(tmp_path):
  from cnnlab.errors import UserError  # pylint: disable=g-import-not-at-top
  config = build.get_config()
  assert build.default_workdir(config) == os.path.join("runs", "report")
  config.seed_base = 1000
  assert build.default_workdir(config) == os.path.join("runs", "report-seeds1000")
  assert build.experiment_config("weight_sharing", config).seed_base == 1000
  config.compare_to = str(tmp_path / "missing.json")
  with pytest.raises(UserError, match="missing.json"):
    build.validate(config)
  quick = tmp_path / "quick.json"
  reporting.write_json(str(quick), {"claims": [], "quick": True})
  config.compare_to = str(quick)
  with pytest.raises(UserError, match="same mode"):
    build.validate(config)


def test_rates_sentence_names_each_choice_and_the_validation_split():
  from cnnlab.report import rates  # pylint: disable=g-import-not-at-top
  entry = lambda n, chosen: {"chosen": chosen, "n_validation": n,  # noqa: E731
                             "validation_accuracy": {"0.001": 0.9, "0.01": 0.95}}
  assert rates.sentence({}, "arm") == "Every arm at the configured learning rate (no tuning)."
  one = rates.sentence({"CNN": entry(800, 0.01), "MLP": entry(800, 0.001)}, "model")
  assert "a 800-example validation split" in one and "CNN 0.01 (0.001: 90.0 %, 0.01: 95.0 %); MLP 0.001" in one
  mixed = rates.sentence({"1-D none": entry(800, 0.01), "2-D none": entry(288, 0.01)}, "variant")
  assert "1-D none 0.01 (800 validation examples)" in mixed and "2-D none 0.01 (288 validation examples)" in mixed
