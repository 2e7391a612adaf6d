"""Weight sharing makes conv layers orders of magnitude smaller than dense ones; AlexNet has ~60M weights.

Command: python run.py --exp=param_count
Run time: 2 s beside another experiment in the standard report (2 CPU cores, 2026-11-28);
shapes only: every count comes from `jax.eval_shape` of a real linen layer or model, nothing is materialised.
Result: every claim checks out except "a dense layer of 10,000 neurons on a 256x256x3 image has more than
10 billion weights": it has 1,966,080,000 (5.1x fewer). AlexNet (two-GPU grouping, 227x227x3) has
60,965,224 parameters, 659,272 neurons (290,400 in conv1) and 724M multiply-adds; ungrouped, 62,378,344
and 1,135M. XLA's own FLOP count of each layer equals 2 x (multiply-adds on non-padding inputs) + bias adds.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from cnnlab import models
from cnnlab.ops import analysis, flops
from cnnlab.report import ledger, rendering as reporting, verdicts


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  """The standard config; `quick` shrinks it for smoke tests."""
  c = ml_collections.ConfigDict()
  c.alexnet_input = 227       # AlexNet input side (227 is what the 11x11/4 conv1 arithmetic needs)
  c.lenet_input = 32          # LeNet-5 input side
  c.about_tolerance = 0.1     # "about N" holds when the computed number is within this relative error of N
  c.xla_check = True          # also lower each conv/dense layer and compare with XLA's FLOP count
  if quick:
    c.xla_check = False
  return c


def _abstract_params(layer: nn.Module, x_shape: tuple[int, ...]) -> Any:
  x = jax.ShapeDtypeStruct(x_shape, np.float32)
  return jax.eval_shape(layer.init, jax.random.key(0), x)["params"]


def _weights_and_biases(layer: nn.Module, x_shape: tuple[int, ...]) -> tuple[int, int]:
  """(kernel scalars, bias scalars) of a layer applied to an input of `x_shape`."""
  p = _abstract_params(layer, x_shape)
  return int(np.prod(p["kernel"].shape)), int(np.prod(p["bias"].shape)) if "bias" in p else 0


def verdict(kind: str, claimed: float, computed: float, tol: float) -> str:
  """'true' / 'false' for an exact, 'about' or 'more than' claim, with the relative error where useful."""
  if kind == "exact":
    return "true" if computed == claimed else f"false ({computed / claimed:.3g}x the claim)"
  if kind == "about":
    err = computed / claimed - 1
    return f"{'true' if abs(err) <= tol else 'false'} ({err:+.1%})"
  if kind == "more_than":
    return "true" if computed > claimed else f"false ({claimed / computed:.2g}x fewer)"
  raise ValueError(f"unknown claim kind {kind!r}")


def _model_rows(name: str, x_shape: tuple[int, ...], xla_check: bool) -> list[dict[str, Any]]:
  """Per layer with parameters: output shape, neurons, parameters, MACs (and XLA's FLOPs)."""
  model = models.create(name)
  acts = {r["layer"]: r for r in analysis.activation_table(model, x_shape)}
  macs = {r["layer"]: r for r in flops.macs_by_layer(model, x_shape, with_xla=xla_check)}
  rows = []
  for p in analysis.param_table(model, x_shape):
    a, m = acts.get(p["layer"]), macs.get(p["layer"], {})
    row = {"layer": p["layer"], "out_shape": a and a["shape"], "neurons": a and a["neurons"],
           "params": p["params"], "macs": m.get("macs"), "unpadded_macs": m.get("unpadded_macs"),
           "bias_adds": m.get("bias_adds")}
    if xla_check and m:
      row["xla_flops"] = m["xla_flops"]
      row["xla_matches"] = m["xla_flops"] == 2 * m["unpadded_macs"] + m["bias_adds"]
    rows.append(row)
  return rows


def _whole_model_xla_flops(name: str, x_shape: tuple[int, ...]) -> float:
  model = models.create(name)
  x = jax.ShapeDtypeStruct(x_shape, np.float32)
  variables = analysis.abstract_variables(model, x_shape)
  return float(jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).cost_analysis()["flops"])


def _sum(rows, key):
  return sum(r[key] for r in rows if r.get(key) is not None)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the experiment, writes results.json, results.md (and figures) to `workdir`, returns the results."""
  tol = config.about_tolerance
  claims = []

  def claim(text, kind, claimed, computed, key=""):  # `key` names the claims the ledger (CLAIMS below) reads
    claims.append({"id": key, "claim": text, "kind": kind, "claimed": claimed, "computed": computed,
                   "verdict": verdict(kind, claimed, computed, tol)})

  side = 224 * 224 * 3
  dense_w, _ = _weights_and_biases(nn.Dense(side), (1, side))
  conv_w, _ = _weights_and_biases(nn.Conv(3, (11, 11), use_bias=False), (1, 224, 224, 3))
  claim("dense 224x224x3 -> 224x224x3 has 150,528^2 weights", "exact", 150_528 ** 2, dense_w, "dense_224")
  claim("11x11 conv, 3 -> 3 channels, has 1,089 weights (any image size)", "exact", 1_089, conv_w, "conv_11x11")
  inputs = int(np.prod((256, 256, 3)))
  big_w, _ = _weights_and_biases(nn.Dense(10_000), (1, inputs))
  claim("a 256x256x3 image is 196,608 inputs", "exact", 196_608, inputs)
  claim("dense layer of 10,000 neurons on it has more than 10 billion weights", "more_than", 10_000_000_000, big_w,
        "ten_billion")
  for side_px, k in ((18, 3), (100, 5)):
    neuron_w, _ = _weights_and_biases(nn.Dense(1), (1, side_px * side_px))
    filt_w, filt_b = _weights_and_biases(nn.Conv(1, (k, k)), (1, side_px, side_px, 1))
    claim(f"{side_px}x{side_px} input: {side_px ** 2:,} weights per dense neuron", "exact", side_px ** 2, neuron_w,
          f"dense_{side_px}")
    claim(f"{side_px}x{side_px} input: {k * k} weights (+1 bias) per {k}x{k} filter", "exact", k * k + 1,
          filt_w + filt_b, f"filter_{side_px}")

  a_shape = (1, config.alexnet_input, config.alexnet_input, 3)
  alex = _model_rows("alexnet", a_shape, config.xla_check)
  alex_u = _model_rows("alexnet_ungrouped", a_shape, config.xla_check)
  alex_table = analysis.param_table(models.create("alexnet"), a_shape)
  alex_params = sum(p["params"] for p in alex_table)
  alex_weights = sum(int(np.prod(shape)) for p in alex_table for k, shape in p["shapes"].items() if k == "kernel")
  claim("AlexNet (grouped, 227x227x3) has 60,965,224 parameters", "exact", 60_965_224, alex_params)
  claim("AlexNet has about 60 million weights", "about", 60_000_000, alex_weights, "alexnet_weights")
  claim("AlexNet has about 650,000 neurons", "about", 650_000, _sum(alex, "neurons"), "alexnet_neurons")
  claim("AlexNet has about 300,000 neurons in the first layer", "about", 300_000, alex[0]["neurons"],
        "alexnet_conv1_neurons")

  l_shape = (1, config.lenet_input, config.lenet_input, 1)
  lenet = _model_rows("lenet5", l_shape, config.xla_check)
  totals = {
      "alexnet": {"params": _sum(alex, "params"), "neurons": _sum(alex, "neurons"), "macs": _sum(alex, "macs")},
      "alexnet_ungrouped": {"params": _sum(alex_u, "params"), "neurons": _sum(alex_u, "neurons"),
                            "macs": _sum(alex_u, "macs")},
      "lenet5": {"params": _sum(lenet, "params"), "neurons": _sum(lenet, "neurons"), "macs": _sum(lenet, "macs")},
  }
  if config.xla_check:
    for name, shape in (("alexnet", a_shape), ("alexnet_ungrouped", a_shape), ("lenet5", l_shape)):
      totals[name]["xla_flops_whole_model"] = _whole_model_xla_flops(name, shape)

  results = {"about_tolerance": tol, "claims": claims, "alexnet": alex, "alexnet_ungrouped": alex_u, "lenet5": lenet, "totals": totals}
  reporting.write_results(workdir, results, _markdown(results, config))
  return results


def _fmt(v):
  if isinstance(v, bool):
    return "yes" if v else "NO"
  return "–" if v is None else (int(v) if isinstance(v, float) and v.is_integer() else v)


def _layer_table(rows, other=None):
  """Per-layer Markdown table; `other` adds the ungrouped variant's columns."""
  xla = any("xla_flops" in r for r in rows)
  headers = ["layer", "output", "neurons", "params", "MACs"]
  headers += ["params (ungrouped)", "MACs (ungrouped)"] if other else []
  headers += ["MACs on real inputs", "XLA FLOPs", "XLA = 2·MACs on real inputs + bias adds"] if xla else []
  body = []
  for i, r in enumerate(rows):
    line = [r["layer"], _fmt(r["out_shape"] and "x".join(map(str, r["out_shape"]))), _fmt(r["neurons"]), r["params"],
            _fmt(r["macs"])]
    line += [other[i]["params"], _fmt(other[i]["macs"])] if other else []
    line += [_fmt(r.get("unpadded_macs")), _fmt(r.get("xla_flops")), _fmt(r.get("xla_matches"))] if xla else []
    body.append(line)
  total = ["total", "", sum(r["neurons"] or 0 for r in rows), sum(r["params"] for r in rows),
           sum(r["macs"] or 0 for r in rows)]
  if other:
    total += [sum(r["params"] for r in other), sum(r["macs"] or 0 for r in other)]
  total += [""] * (len(headers) - len(total))
  return reporting.markdown_table(headers, body + [total])


def _markdown(results: dict, config: ml_collections.ConfigDict) -> str:
  claims = reporting.markdown_table(["claim", "claimed", "computed", "verdict"],
                                    [[c["claim"], c["claimed"], c["computed"], c["verdict"]]
                                     for c in results["claims"]])
  md = ["# Parameter accounting: weight sharing in numbers\n",
        f"\"About N\" holds within ±{config.about_tolerance:.0%}. Every computed number comes from a linen layer or "
        "model evaluated on abstract shapes.\n", claims,
        f"\n## AlexNet (Krizhevsky et al. 2012), {config.alexnet_input}x{config.alexnet_input}x3, two-GPU grouping\n",
        "Neurons = outputs of each layer with weights (per example). MACs = multiply-adds per example, "
        "including those with zero padding; XLA counts only the products with real inputs.\n",
        _layer_table(results["alexnet"], results["alexnet_ungrouped"]),
        f"\n## LeNet-5 (LeCun et al. 1998), {config.lenet_input}x{config.lenet_input}x1\n",
        "S2/S4 (trainable subsampling) and the RBF output have parameters but no conv/dense multiply-adds.\n",
        _layer_table(results["lenet5"])]
  t = results["totals"]
  if config.xla_check:
    md.append("\nWhole forward pass, XLA's FLOP count (includes bias, activations, pooling, LRN):\n")
    md.append(reporting.markdown_table(
        ["model", "MACs (conv + dense)", "2·MACs", "XLA FLOPs, whole model"],
        [[n, v["macs"], 2 * v["macs"], _fmt(v["xla_flops_whole_model"])] for n, v in t.items()]))
  return "\n".join(md)


def _by_id(results: dict, key: str) -> dict:
  return next(c for c in results["claims"] if c["id"] == key)


def _judge_dense_vs_conv(results: dict) -> ledger.Finding:
  rows = [_by_id(results, k) for k in ("dense_224", "conv_11x11", "dense_18", "filter_18", "dense_100", "filter_100")]
  held = sum(r["computed"] == r["claimed"] for r in rows)
  dense, conv = rows[0]["computed"], rows[1]["computed"]
  return ledger.Finding(f"{held}/{len(rows)} counts exact; dense 224x224x3 layer {dense:,} weights vs "
                        f"{conv:,} for an 11x11 conv ({dense / conv:.2g}x)", verdicts.from_counts(held, len(rows)))


def _judge_ten_billion(results: dict) -> ledger.Finding:
  r = _by_id(results, "ten_billion")
  return ledger.Finding(f"{r['computed']:,} weights ({r['claimed'] / r['computed']:.2g}x fewer than claimed)",
                        verdicts.from_flag(r["computed"] > r["claimed"]))


def _judge_about(key: str, what: str) -> Callable[[dict], ledger.Finding]:
  def judge(results: dict) -> ledger.Finding:
    r = _by_id(results, key)
    return ledger.Finding(f"{r['computed']:,} {what} ({r['computed'] / r['claimed'] - 1:+.1%})",
                          verdicts.about(r["computed"], r["claimed"], results["about_tolerance"]))
  return judge


_WIKI = "Wikipedia, 'Convolutional neural network'"
CLAIMS = [
    ledger.Claim("dense_vs_conv_weights", "A dense layer needs a weight per input pixel per neuron (150,528² for a "
                 "224x224x3 image, 10,000 per neuron at 100x100) where a shared filter needs k² (1,089 for 11x11x3x3, "
                 "25 for 5x5).", f"{_WIKI}; CNN explainers", "parameter counts of real linen layers (jax.eval_shape) "
                 "equal the claimed counts exactly", _judge_dense_vs_conv),
    ledger.Claim("ten_billion_weights", "A dense layer of 10,000 neurons on a 256x256x3 image has more than 10 billion "
                 "weights.", "a CNN explainer (seed text)", "weights of nn.Dense(10,000) on 196,608 inputs > 1e10",
                 _judge_ten_billion),
    ledger.Claim("alexnet_60m_weights", "AlexNet has about 60 million weights.", "Krizhevsky et al. 2012",
                 "kernel weights of the grouped AlexNet linen model within the about-tolerance (10%) of 60M",
                 _judge_about("alexnet_weights", "weights")),
    ledger.Claim("alexnet_650k_neurons", "AlexNet has about 650,000 neurons.", "Krizhevsky et al. 2012",
                 "activations of every conv/dense layer within 10% of 650,000", _judge_about("alexnet_neurons",
                                                                                              "neurons")),
    ledger.Claim("alexnet_300k_first_layer", "AlexNet's first layer has about 300,000 neurons.", "CNN explainers",
                 "conv1 activations (55x55x96) within 10% of 300,000", _judge_about("alexnet_conv1_neurons", "neurons")),
]
