"""The claims ledger and `--exp=report`: every claim gets a verdict computed from results, never a literal."""

import ast
import inspect
import json
import os

import pytest

import experiments
from cnnlab.report import ledger, rendering as reporting
from experiments import report

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
  """No judge passes a string constant as the verdict of a Finding: verdicts come from `cnnlab.report.verdicts` or results."""
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
  config = report.get_config(quick=True)
  config.experiments = names
  for k, v in overrides.items():
    config[k] = v
  workdir = str(tmp_path / "report")
  os.makedirs(workdir, exist_ok=True)
  from cnnlab import runner  # pylint: disable=g-import-not-at-top
  return runner.run_experiment(report, config, workdir), workdir


def test_quick_report_on_fast_experiments_reuses_and_refreshes_stale_runs(tmp_path):
  names = "param_count,conv_arithmetic"
  out, workdir = _quick_report(tmp_path, names)
  rows = out["claims"]
  expected = [c.id for n in ("param_count", "conv_arithmetic") for c in experiments.get(n).CLAIMS]
  assert [r["id"] for r in rows] == expected
  for r in rows:
    assert r["verdict"] in ledger.VERDICTS and any(ch.isdigit() for ch in r["figure"]), r
  by_id = {r["id"]: r for r in rows}
  assert by_id["ten_billion_weights"]["verdict"] == "refuted"  # 1,966,080,000 < 1e10, computed by the rule
  md = open(os.path.join(workdir, "REPORT.md")).read()
  assert "## The claims ledger" in md and "## Environment" in md and "`python run.py --exp=param_count`" in md
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


def test_report_refreshes_the_readme_block(tmp_path):
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{report.README_BEGIN}\nold\n{report.README_END}\noutro\n")
  _quick_report(tmp_path, "param_count", readme=str(readme))
  text = readme.read_text()
  assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
  assert "| claim | source | experiment | measured | verdict |" in text and "do not edit by hand" in text


def test_unknown_experiment_is_a_clear_error():
  from cnnlab.errors import UserError  # pylint: disable=g-import-not-at-top
  config = report.get_config()
  config.experiments = "param_count,no_such"
  with pytest.raises(UserError, match="no_such"):
    report.selected(config)


@pytest.mark.slow  # every experiment's quick config: several minutes on 2 cores
def test_full_quick_report_gives_every_claim_a_computed_verdict(tmp_path):
  out, workdir = _quick_report(tmp_path, "")
  assert {p["status"] for p in out["experiments"].values()} == {"ran"}
  assert len(out["claims"]) == len(all_claims())
  for r in out["claims"]:
    assert r["verdict"] in ledger.VERDICTS, r
  saved = json.load(open(os.path.join(workdir, "report.json")))
  assert saved["counts"][ledger.NOT_MEASURED] == 0


def test_source_digest_ignores_docstrings_and_comments_but_not_code(tmp_path):
  import types  # pylint: disable=g-import-not-at-top
  from cnnlab import runner  # pylint: disable=g-import-not-at-top
  def digest(text):
    path = tmp_path / "m.py"
    path.write_text(text)
    return runner.source_digest(types.SimpleNamespace(__file__=str(path)))
  base = digest('"""Doc."""\n\ndef f():\n  """Doc."""\n  return 1\n')
  assert digest('"""Other doc."""\n# a comment\ndef f():\n  """New."""\n  return 1\n') == base
  assert digest('"""Doc."""\n\ndef f():\n  """Doc."""\n  return 2\n') != base
