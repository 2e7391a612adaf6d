"""The five anatomy experiments run end to end (quick configs) and write their results."""

import os

import pytest

import experiments
from cnnlab.report import rendering as reporting

ANATOMY = ("param_count", "conv_arithmetic", "conv_as_matmul", "classic_kernels", "receptive_field")


def _run(name, run_quick):
  """The quick run's results and results.md (run_quick also checks: no verdicts or flags in the results)."""
  _, results, md, workdir = run_quick(name)
  for f in ("config.json", "results.json", "results.md"):
    assert os.path.exists(os.path.join(workdir, f)), f
  for fig in results.get("figures", []):
    assert os.path.getsize(os.path.join(workdir, fig)) > 0
  assert reporting.read_json(os.path.join(workdir, "results.json")).keys() == results.keys()
  return results, md


def _verdicts(name, results, md):
  """Each claim's verdict, computed by its judge from the stored results with the smoke-test mark lifted (these
  claims are exact: the quick sizes decide them too); results.md shows each figure under the smoke-test mark."""
  stored = reporting.stored_form(results)
  claims = experiments.get(name).CLAIMS
  assert stored["smoke_test"] and all(f"— smoke test (no verdict).** {c.assess(stored).figure}" in md for c in claims)
  return {c.id: c.assess({**stored, "smoke_test": False}).verdict for c in claims}


def test_claims_are_listed():
  for name in ANATOMY:
    assert experiments.claim(name)
    assert experiments.get(name).get_config(quick=True).keys() == experiments.get(name).get_config().keys()


def test_param_count(run_quick):
  from experiments import param_count
  results, md = _run("param_count", run_quick)
  checks = {c["claim"]: param_count.check_text(c, results["about_tolerance"]) for c in results["claims"]}
  assert checks["AlexNet (grouped, 227x227x3) has 60,965,224 parameters"] == "true"
  assert checks["dense layer of 10,000 neurons on it has more than 10 billion weights"] == "false (5.1x fewer)"
  assert checks["AlexNet has about 300,000 neurons in the first layer"] == "true (-3.2%)"
  assert results["totals"]["alexnet_ungrouped"]["params"] == 62_378_344
  assert results["totals"]["lenet5"]["params"] == 60_840
  assert "1,966,080,000" in md
  # The verdicts the judges gave before results held only measurements (shapes only: deterministic).
  assert _verdicts("param_count", results, md) == {
      "dense_vs_conv_weights": "supported", "ten_billion_weights": "refuted", "alexnet_60m_weights": "supported",
      "alexnet_650k_neurons": "supported", "alexnet_300k_first_layer": "supported"}


def test_param_count_xla_column():
  from experiments.param_count import _xla_agrees  # pylint: disable=g-import-not-at-top,protected-access
  row = {"xla_flops": 2 * 10 + 3, "unpadded_macs": 10, "bias_adds": 3}
  assert _xla_agrees(row) and not _xla_agrees({**row, "bias_adds": 4}) and _xla_agrees({"xla_flops": None}) is None


def test_conv_arithmetic(run_quick):
  results, md = _run("conv_arithmetic", run_quick)
  sw = results["sweep"]
  assert not sw["mismatches"] and sw["impossible"]["cases"] > 0
  assert all(g["cases"] == g["agree"] for g in [*sw["by_relation"].values(), sw["named_paddings"], sw["transposed"],
                                                  sw["transpose_of_conv"]])
  assert sw["impossible"]["cases"] == sw["impossible"]["lax_empty"]
  assert "0 mismatched shapes" in md
  assert _verdicts("conv_arithmetic", results, md) == {"conv_arithmetic": "supported"}


def test_conv_as_matmul(run_quick):
  results, md = _run("conv_as_matmul", run_quick)
  assert max(r["im2col_vs_direct"] for r in results["agreement"]) < 1e-4
  errs = {(r["ours"], r["scipy"]): r["max_abs_diff"] for r in results["correlation"]}
  assert errs[("conv_lax (float32)", "correlate2d")] < 1e-5 < errs[("conv_lax (float32)", "convolve2d")]
  row = results["timing"][0]
  assert all(len(t) == results["repeats"] and min(t) > 0 for t in row["times_s"].values())
  assert max(row[f"{k}_err"] for k in ("loop", "im2col", "lax")) < 1e-5  # the timed loop computes the conv
  # A quick run is a smoke test; its exact claims are decided by its numbers once that mark is lifted.
  found = _verdicts("conv_as_matmul", results, md)
  assert found["conv_as_dot_products"] == found["conv_is_correlation"] == "supported"


@pytest.mark.parametrize("layer", ["tiny", "dilated_3x3_d2", "alexnet_conv2_grouped"])
def test_conv_loop_is_the_definition(layer):
  import jax
  import numpy as np
  from cnnlab.ops import conv_ops
  from experiments import conv_as_matmul
  xs, ws, s, p, d, g = conv_as_matmul.LAYERS[layer]
  kw = dict(window_strides=s, padding=p, rhs_dilation=d, feature_group_count=g)
  rng = np.random.default_rng(0)
  x, w = rng.standard_normal((2, *xs)).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
  got = jax.jit(lambda x, w: conv_as_matmul.conv_loop(x, w, **kw))(x, w)
  np.testing.assert_allclose(got, conv_ops.conv_direct(x, w, **kw), rtol=1e-4, atol=1e-4)


def _timed(ratio: float, spread: float, rounds: int = 10) -> dict:
  """Synthetic timing results: the loop `ratio` times slower than lax (im2col slower still), log-normal noise."""
  import numpy as np
  rng = np.random.default_rng(0)
  rows = []
  for layer in ("a", "b", "c"):
    lax_s = 0.01 * np.exp(rng.normal(0, spread, rounds))
    rows.append({"layer": layer, "times_s": {"loop": list(ratio * lax_s * np.exp(rng.normal(0, spread, rounds))),
                                             "im2col": list(1.5 * lax_s), "lax": list(lax_s)}})
  return {"timing": rows, "backend": "cpu"}


def test_conv_as_matmul_timing_judge():
  from experiments import conv_as_matmul
  claim = {c.id: c for c in conv_as_matmul.CLAIMS}["efficient_parallel"]
  assert claim.assess(_timed(10.0, 0.05)).verdict == "supported"
  assert claim.assess(_timed(1.0, 0.05)).verdict == "refuted"  # the interval lies wholly under the 2x margin
  assert claim.assess(_timed(2.0, 0.5, rounds=3)).verdict == "inconclusive"
  finding = claim.assess(_timed(10.0, 0.05))
  assert "a 9.8x, b 10.1x" in finding.figure and finding.figure.count("decades [") == 3
  assert (claim.rule.comparison, round(10 ** claim.rule.margin, 9), claim.rule.alpha) == ("greater", 2.0, 0.05)


def test_classic_kernels(run_quick):
  results, md = _run("classic_kernels", run_quick)
  photo = results["photos"]["camera"]
  assert max(photo["psnr"].values()) > photo["psnr_noisy"]
  assert all(r["max_abs_diff"] < 1e-4 for r in photo["agreement"] if "max_abs_diff" in r)
  assert results["checkerboard"]["corner_recall"] == 1.0
  assert _verdicts("classic_kernels", results, md) == {"gaussian_denoises": "supported",
                                                       "derivative_kernels": "supported"}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_receptive_field(run_quick):
  from experiments import receptive_field
  results, md = _run("receptive_field", run_quick)
  assert all(receptive_field.agrees(r) for rows in results["per_layer"].values() for r in rows)
  assert [r["dilated"]["rf"] for r in results["dilation"]] == [3, 7, 15]
  erf = results["erf"]
  assert [p["seed"] for p in erf["per_seed"]] == [0, 1]  # quick: seeds 2 from seed_base 0
  assert all(receptive_field.support_inside_field(erf, p[k]) for p in erf["per_seed"] for k in ("untrained", "trained"))
  assert "Effective receptive field" in md and "smoke test" in md
  # The claims are exact checks of shapes: the quick run's numbers decide them once it is not marked a smoke test.
  assert _verdicts("receptive_field", results, md) == {"receptive_field_formula": "supported",
                                                       "dilation_grows_field": "supported"}
