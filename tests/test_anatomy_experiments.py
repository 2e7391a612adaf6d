"""The five anatomy experiments run end to end (quick configs) and write their results."""

import os

import pytest

import experiments
from cnnlab import runner
from cnnlab.report import rendering as reporting

ANATOMY = ("param_count", "conv_arithmetic", "conv_as_matmul", "classic_kernels", "receptive_field")


def _run(name, tmp_path):
  module = experiments.get(name)
  workdir = str(tmp_path / name)
  results = runner.run_experiment(module, module.get_config(quick=True), workdir)
  for f in ("config.json", "results.json", "results.md"):
    assert os.path.exists(os.path.join(workdir, f)), f
  for fig in results.get("figures", []):
    assert os.path.getsize(os.path.join(workdir, fig)) > 0
  assert reporting.read_json(os.path.join(workdir, "results.json")).keys() == results.keys()
  return results, open(os.path.join(workdir, "results.md")).read()


def test_claims_are_listed():
  for name in ANATOMY:
    assert experiments.claim(name)
    assert experiments.get(name).get_config(quick=True).keys() == experiments.get(name).get_config().keys()


def test_param_count(tmp_path):
  results, md = _run("param_count", tmp_path)
  verdicts = {c["claim"]: c["verdict"] for c in results["claims"]}
  assert verdicts["AlexNet (grouped, 227x227x3) has 60,965,224 parameters"] == "true"
  assert verdicts["dense layer of 10,000 neurons on it has more than 10 billion weights"].startswith("false")
  assert results["totals"]["alexnet_ungrouped"]["params"] == 62_378_344
  assert results["totals"]["lenet5"]["params"] == 60_840
  assert "1,966,080,000" in md


def test_conv_arithmetic(tmp_path):
  results, md = _run("conv_arithmetic", tmp_path)
  assert results["all_agree"] and not results["sweep"]["mismatches"]
  assert results["sweep"]["impossible"]["cases"] > 0
  assert "every prediction matches" in md


def test_conv_as_matmul(tmp_path):
  results, _ = _run("conv_as_matmul", tmp_path)
  assert max(r["im2col_vs_direct"] for r in results["agreement"]) < 1e-4
  errs = {(r["ours"], r["scipy"]): r["max_abs_diff"] for r in results["correlation"]}
  assert errs[("conv_lax (float32)", "correlate2d")] < 1e-5 < errs[("conv_lax (float32)", "convolve2d")]
  assert results["timing"][0]["lax_s"] > 0


def test_classic_kernels(tmp_path):
  results, _ = _run("classic_kernels", tmp_path)
  photo = results["photos"]["camera"]
  assert max(photo["psnr"].values()) > photo["psnr_noisy"]
  assert all(r["max_abs_diff"] < 1e-4 for r in photo["agreement"] if "max_abs_diff" in r)
  assert results["checkerboard"]["corner_recall"] == 1.0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_receptive_field(tmp_path):
  results, md = _run("receptive_field", tmp_path)
  assert all(r["agree"] for rows in results["per_layer"].values() for r in rows)
  assert [r["dilated"]["rf"] for r in results["dilation"]] == [3, 7, 15]
  assert all(s["support_inside_field"] for s in results["erf"]["stats"].values())
  assert "Effective receptive field" in md
