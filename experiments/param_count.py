"""Weight sharing makes conv layers orders of magnitude smaller than dense ones; AlexNet has ~60M weights.

Counts the weights, neurons and multiply-adds of real linen layers and models (AlexNet, LeNet-5) from
shapes only: every count comes from `jax.eval_shape`, nothing is materialised; with `xla_check` it also
records XLA's own FLOP count of each layer beside 2 x (multiply-adds on non-padding inputs) + bias adds.
The CLAIMS judges compare the counts with the claimed ones.

Command: python run.py --exp=param_count
Result:  see REPORT.md (ledger) and the run's results.md.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

import experiments
from cnnlab import models
from cnnlab.ops import analysis, flops
from cnnlab.errors import UserError
from cnnlab.report import ledger, rendering as reporting, tables, verdicts


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  """The standard config; `quick` shrinks it for smoke tests."""
  c = experiments.new_config(quick)
  c.alexnet_input = 227       # AlexNet input side (227 is what the 11x11/4 conv1 arithmetic needs)
  c.lenet_input = 32          # LeNet-5 input side
  c.about_tolerance = 0.1     # "about N" holds when the computed number is within this relative error of N
  c.xla_check = True          # also lower each conv/dense layer and compare with XLA's FLOP count
  if quick:
    c.xla_check = False
  return c


def validate_config(config: ml_collections.ConfigDict) -> None:
  """One-line errors for sizes the nets cannot take, before anything is written."""
  if not 67 <= config.alexnet_input <= 4096:
    raise UserError(f"alexnet_input must be in [67, 4096] (conv1 11x11/4, then three 3x3/2 pools), "
                    f"got {config.alexnet_input}")
  if not 1 <= config.lenet_input <= 1024:
    raise UserError(f"lenet_input must be in [1, 1024], got {config.lenet_input}")
  if not 0 < config.about_tolerance < 1:
    raise UserError(f"about_tolerance must be in (0, 1), got {config.about_tolerance}")


def _abstract_params(layer: nn.Module, x_shape: tuple[int, ...]) -> Any:
  x = jax.ShapeDtypeStruct(x_shape, np.float32)
  return jax.eval_shape(layer.init, jax.random.key(0), x)["params"]


def _weights_and_biases(layer: nn.Module, x_shape: tuple[int, ...]) -> tuple[int, int]:
  """(kernel scalars, bias scalars) of a layer applied to an input of `x_shape`."""
  p = _abstract_params(layer, x_shape)
  return int(np.prod(p["kernel"].shape)), int(np.prod(p["bias"].shape)) if "bias" in p else 0


def holds(row: dict, tol: float) -> bool:
  """Whether a claim row ('exact', 'about' within relative `tol`, or 'more_than') holds for its computed number."""
  kind, claimed, computed = row["kind"], row["claimed"], row["computed"]
  if kind == "exact":
    return computed == claimed
  if kind == "about":
    return abs(computed / claimed - 1) <= tol
  if kind == "more_than":
    return computed > claimed
  raise ValueError(f"unknown claim kind {kind!r}")


def check_text(row: dict, tol: float) -> str:
  """A claim row's check for results.md: 'true' / 'false', with the relative error where useful."""
  kind, claimed, computed = row["kind"], row["claimed"], row["computed"]
  ok = holds(row, tol)
  if kind == "about":
    return f"{'true' if ok else 'false'} ({computed / claimed - 1:+.1%})"
  if ok:
    return "true"
  if kind == "exact":
    return f"false ({computed / claimed:.3g}x the claim)"
  return f"false ({claimed / computed:.2g}x fewer)"


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
    rows.append(row)
  return rows


def _whole_model_xla_flops(name: str, x_shape: tuple[int, ...]) -> float:
  model = models.create(name)
  x = jax.ShapeDtypeStruct(x_shape, np.float32)
  variables = analysis.abstract_variables(model, x_shape)
  return float(jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).cost_analysis()["flops"])


def _sum(rows, key):
  return sum(r[key] for r in rows if r.get(key) is not None)


def _layer_claims() -> list[dict[str, Any]]:
  """Weights of single dense and conv layers, next to the counts the texts claim."""
  claims = []

  def claim(text, kind, claimed, computed, key=""):  # `key` names the claims the ledger (CLAIMS below) reads
    claims.append({"id": key, "claim": text, "kind": kind, "claimed": claimed, "computed": computed})

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
  return claims


def _alexnet_claims(alex: list[dict[str, Any]], a_shape: tuple[int, ...]) -> list[dict[str, Any]]:
  """AlexNet's parameters, weights and neurons, next to the counts the texts claim."""
  table = analysis.param_table(models.create("alexnet"), a_shape)
  params = sum(p["params"] for p in table)
  weights = sum(int(np.prod(shape)) for p in table for k, shape in p["shapes"].items() if k == "kernel")
  rows = [("AlexNet (grouped, 227x227x3) has 60,965,224 parameters", "exact", 60_965_224, params, ""),
          ("AlexNet has about 60 million weights", "about", 60_000_000, weights, "alexnet_weights"),
          ("AlexNet has about 650,000 neurons", "about", 650_000, _sum(alex, "neurons"), "alexnet_neurons"),
          ("AlexNet has about 300,000 neurons in the first layer", "about", 300_000, alex[0]["neurons"],
           "alexnet_conv1_neurons")]
  return [{"id": key, "claim": text, "kind": kind, "claimed": claimed, "computed": computed}
          for text, kind, claimed, computed, key in rows]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Counts, writes results.json and results.md to `workdir`; returns the counts."""
  a_shape = (1, config.alexnet_input, config.alexnet_input, 3)
  l_shape = (1, config.lenet_input, config.lenet_input, 1)
  rows = {"alexnet": _model_rows("alexnet", a_shape, config.xla_check),
          "alexnet_ungrouped": _model_rows("alexnet_ungrouped", a_shape, config.xla_check),
          "lenet5": _model_rows("lenet5", l_shape, config.xla_check)}
  totals = {name: {k: _sum(r, k) for k in ("params", "neurons", "macs")} for name, r in rows.items()}
  if config.xla_check:
    for name, shape in (("alexnet", a_shape), ("alexnet_ungrouped", a_shape), ("lenet5", l_shape)):
      totals[name]["xla_flops_whole_model"] = _whole_model_xla_flops(name, shape)
  results = {"about_tolerance": config.about_tolerance,
             "claims": _layer_claims() + _alexnet_claims(rows["alexnet"], a_shape), **rows, "totals": totals}
  results["smoke_test"] = config.smoke_test
  reporting.write_results(workdir, results, _markdown(results, config))
  return results


def _fmt(v):
  if isinstance(v, bool):
    return "yes" if v else "NO"
  return "–" if v is None else (int(v) if isinstance(v, float) and v.is_integer() else v)


def _xla_agrees(row: dict) -> bool | None:
  """XLA's FLOPs = 2 x multiply-adds on real (non-padding) inputs + bias adds (None for a layer without them)."""
  if row.get("xla_flops") is None:
    return None
  return row["xla_flops"] == 2 * row["unpadded_macs"] + row["bias_adds"]


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
    line += [_fmt(r.get("unpadded_macs")), _fmt(r.get("xla_flops")), _fmt(_xla_agrees(r))] if xla else []
    body.append(line)
  total = ["total", "", sum(r["neurons"] or 0 for r in rows), sum(r["params"] for r in rows),
           sum(r["macs"] or 0 for r in rows)]
  if other:
    total += [sum(r["params"] for r in other), sum(r["macs"] or 0 for r in other)]
  total += [""] * (len(headers) - len(total))
  return reporting.markdown_table(headers, body + [total])


def _markdown(results: dict, config: ml_collections.ConfigDict) -> str:
  tol = results["about_tolerance"]
  claims = reporting.markdown_table(["claim", "claimed", "computed", "holds"],
                                    [[c["claim"], c["claimed"], c["computed"], check_text(c, tol)]
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
  md.append(tables.verdicts_section(CLAIMS, results))
  return "\n".join(md)


def _by_id(results: dict, key: str) -> dict:
  return next(c for c in results["claims"] if c["id"] == key)


def _judge_dense_vs_conv(results: dict) -> ledger.Finding:
  rows = [_by_id(results, k) for k in ("dense_224", "conv_11x11", "dense_18", "filter_18", "dense_100", "filter_100")]
  held = sum(holds(r, results["about_tolerance"]) for r in rows)
  dense, conv = rows[0]["computed"], rows[1]["computed"]
  return ledger.Finding(f"{held}/{len(rows)} counts exact; dense 224x224x3 layer {dense:,} weights vs "
                        f"{conv:,} for an 11x11 conv ({dense / conv:.2g}x)", verdicts.from_counts(held, len(rows)))


def _judge_ten_billion(results: dict) -> ledger.Finding:
  r = _by_id(results, "ten_billion")
  return ledger.Finding(f"{r['computed']:,} weights ({r['claimed'] / r['computed']:.2g}x fewer than claimed)",
                        verdicts.from_flag(holds(r, results["about_tolerance"])))


def _judge_about(key: str, what: str) -> Callable[[dict], ledger.Finding]:
  def judge(results: dict) -> ledger.Finding:
    r = _by_id(results, key)
    return ledger.Finding(f"{r['computed']:,} {what} ({r['computed'] / r['claimed'] - 1:+.1%})",
                          verdicts.from_flag(holds(r, results["about_tolerance"])))
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
                 "conv1 activations (55x55x96) within 10% of 300,000",
                 _judge_about("alexnet_conv1_neurons", "neurons")),
]
