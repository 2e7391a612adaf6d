"""Output sizes follow o = floor((i + 2p - k̂)/s) + 1 and o' = s(i'-1) + a + k̂ - 2p (Dumoulin & Visin 2016).

Measures, over a grid of (i, k, s, p, d), the output size that `cnnlab.ops.conv_arithmetic` predicts against
the shape of the real `lax` / flax op — convolutions, transposed convolutions, the transpose of each
convolution, 'SAME' / 'VALID' padding, and the geometries it refuses (GeometryError) against those where lax
returns an empty output — plus the worked examples of the texts. The CLAIMS judge gives the verdict.

Command: python run.py --exp=conv_arithmetic
Result:  see REPORT.md (ledger) and the run's results.md.
"""

import itertools
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax import lax

import experiments
from cnnlab.ops import conv_arithmetic as ca
from cnnlab.report import ledger, rendering as reporting, tables, verdicts

DN = ("NHWC", "HWIO", "NHWC")


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  """The standard config; `quick` shrinks it for smoke tests."""
  c = experiments.new_config(quick)
  c.max_input = 12      # input sizes i = 1..max_input
  c.max_kernel = 5      # kernel sizes k = 1..max_kernel
  c.max_stride = 3      # strides s = 1..max_stride
  c.max_padding = 2     # paddings p = 0..max_padding (both sides)
  c.max_dilation = 3    # dilations d = 1..max_dilation
  if quick:
    c.max_input, c.max_kernel, c.max_dilation = 5, 3, 2
  return c


def _lax_conv_size(i: int, k: int, s: int, padding: Any, d: int) -> int:
  """Output height of a real 2-D lax convolution on an i x i input (shapes only)."""
  x = jax.ShapeDtypeStruct((1, i, i, 1), np.float32)
  w = jax.ShapeDtypeStruct((k, k, 1, 1), np.float32)
  pads = padding if isinstance(padding, str) else [(padding, padding)] * 2
  f = lambda x, w: lax.conv_general_dilated(x, w, (s, s), pads, rhs_dilation=(d, d), dimension_numbers=DN)
  return jax.eval_shape(f, x, w).shape[1]


def _flax_transpose_size(i: int, k: int, s: int, p: int, a: int, d: int) -> int:
  layer = nn.ConvTranspose(1, (k, k), strides=(s, s), padding=[ca.conv_transpose_padding(k, p, a, d)] * 2,
                           kernel_dilation=(d, d))
  x = jax.ShapeDtypeStruct((1, i, i, 1), np.float32)
  return jax.eval_shape(lambda x: layer.init_with_output(jax.random.key(0), x)[0], x).shape[1]


def _transpose_of_conv_size(i: int, k: int, s: int, p: int, d: int, o: int) -> int:
  """Height of the transpose (adjoint) of the conv's linear map applied to its output: the gradient's shape."""
  w = np.ones((k, k, 1, 1), np.float32)
  conv = lambda x: lax.conv_general_dilated(x, w, (s, s), [(p, p)] * 2, rhs_dilation=(d, d), dimension_numbers=DN)
  transpose = jax.linear_transpose(conv, jax.ShapeDtypeStruct((1, i, i, 1), np.float32))
  return jax.eval_shape(transpose, jax.ShapeDtypeStruct((1, o, o, 1), np.float32))[0].shape[1]


def relation(k: int, s: int, p: int, d: int) -> str:
  """The most specific of Dumoulin & Visin's relations that covers a geometry."""
  if d > 1:
    return "15: dilated, o = floor((i + 2p - k̂)/s) + 1"
  if s > 1:
    if p == 0:
      return "5: strided, no padding, o = floor((i - k)/s) + 1"
    return "6: strided and padded, o = floor((i + 2p - k)/s) + 1"
  if p == 0:
    return "1: no padding, unit stride, o = i - k + 1"
  if k % 2 and p == k // 2:
    return "3: half padding, o = i"
  if p == k - 1:
    return "4: full padding, o = i + k - 1"
  return "2: padding p, o = i - k + 2p + 1"


def sweep(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Predicted vs real output sizes over the whole (i, k, s, p, d) grid."""
  grid = itertools.product(range(1, config.max_input + 1), range(1, config.max_kernel + 1),
                           range(1, config.max_stride + 1), range(config.max_padding + 1),
                           range(1, config.max_dilation + 1))
  by_relation: dict[str, list[int]] = {}
  impossible = {"cases": 0, "lax_empty": 0}
  transposed = {"cases": 0, "agree": 0}
  adjoint = {"cases": 0, "agree": 0}
  named = {"cases": 0, "agree": 0}
  mismatches = []
  for i, k, s, p, d in grid:
    actual = _lax_conv_size(i, k, s, p, d)
    try:
      predicted = ca.conv_output_size(i, k, s, p, d)
    except ca.GeometryError:
      impossible["cases"] += 1
      impossible["lax_empty"] += actual <= 0
      continue
    counts = by_relation.setdefault(relation(k, s, p, d), [0, 0])
    counts[0] += 1
    counts[1] += predicted == actual
    if predicted != actual:
      mismatches.append({"op": "conv", "i": i, "k": k, "s": s, "p": p, "d": d, "predicted": predicted,
                         "actual": actual})
    back = _transpose_of_conv_size(i, k, s, p, d, predicted)
    adjoint["cases"] += 1
    adjoint["agree"] += back == i == ca.conv_transpose_output_size(predicted, k, s, p, ca.transpose_extra(
        i, k, s, p, d), d)
    if p == 0:  # Named paddings depend on (i, k, s, d) only; check them once per geometry.
      for mode in ("SAME", "VALID"):
        try:
          named["agree"] += ca.conv_output_size(i, k, s, mode, d) == _lax_conv_size(i, k, s, mode, d)
          named["cases"] += 1
        except ca.GeometryError:
          pass
    if i <= config.max_input // 2 and d <= 2:  # Transposed convs: output grows ~s-fold, so a smaller grid.
      for a in range(s):
        try:
          want = ca.conv_transpose_output_size(i, k, s, p, a, d)
        except ca.GeometryError:
          continue
        got = _flax_transpose_size(i, k, s, p, a, d)
        transposed["cases"] += 1
        transposed["agree"] += want == got
        if want != got:
          mismatches.append({"op": "conv_transpose", "i": i, "k": k, "s": s, "p": p, "a": a, "d": d,
                             "predicted": want, "actual": got})
  order = sorted(by_relation, key=lambda r: int(r.split(":")[0]))
  return {"by_relation": {r: {"cases": by_relation[r][0], "agree": by_relation[r][1]} for r in order},
          "impossible": impossible, "transposed": transposed, "transpose_of_conv": adjoint,
          "named_paddings": named, "mismatches": mismatches}


def seed_examples() -> list[dict[str, Any]]:
  """The worked examples of the texts, each predicted and measured on a real op."""
  rows = []

  def conv(text, i, k, s=1, p=0, d=1):
    rows.append({"example": text, "predicted": ca.conv_output_size(i, k, s, p, d),
                 "measured": _lax_conv_size(i, k, s, p.upper() if isinstance(p, str) else p, d)})

  conv("18x18 input, 3x3 kernel, no padding", 18, 3)
  conv("18x18 input, 3x3 kernel, padding 1", 18, 3, p=1)
  conv("28x28, 5x5, Keras padding='valid'", 28, 5, p="valid")
  conv("28x28, 5x5, Keras padding='same'", 28, 5, p="same")
  conv("28x28, 5x5, stride 2, 'valid'", 28, 5, s=2, p="valid")
  conv("28x28, 5x5, stride 2, 'same' (ceil(i/s))", 28, 5, s=2, p="same")
  conv("18x18, 3x3 dilated by 2 (k̂ = 5), no padding", 18, 3, d=2)
  conv("AlexNet conv1: 227x227, 11x11, stride 4", 227, 11, s=4)
  conv("AlexNet conv1 on the paper's stated 224x224", 224, 11, s=4)
  for text, (i, k, s, p, a) in (("transposed 3x3 stride 2 on 2x2 (undoes 5x5 -> 2x2; relation 13)", (2, 3, 2, 0, 0)),
                                ("transposed 3x3 stride 2, p=1, a=1 on 3x3 (undoes 6x6 -> 3x3; relation 14)",
                                 (3, 3, 2, 1, 1))):
    rows.append({"example": text, "predicted": ca.conv_transpose_output_size(i, k, s, p, a),
                 "measured": _flax_transpose_size(i, k, s, p, a, 1)})
  try:
    ca.conv_output_size(4, 7)
    error = "no error"
  except ca.GeometryError as e:
    error = f"GeometryError: {e}"
  rows.append({"example": "4x4 input, 7x7 kernel, no padding", "predicted": error,
               "measured": _lax_conv_size(4, 7, 1, 0, 1)})
  return rows


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Measures, writes results.json and results.md to `workdir`; returns the measurements."""
  results = {"seed_examples": seed_examples(), "sweep": sweep(config)}
  results["smoke_test"] = config.smoke_test
  reporting.write_results(workdir, results, _markdown(results, config))
  return results


def _example_agrees(e: dict) -> bool:
  """True if the predicted size is measured, or if a geometry predicted impossible (an error) is empty in lax."""
  return e["predicted"] == e["measured"] if isinstance(e["predicted"], int) else e["measured"] <= 0


def _yes(ok: bool) -> str:
  return "yes" if ok else "NO"


def _markdown(results: dict, config: ml_collections.ConfigDict) -> str:
  sw = results["sweep"]
  examples = reporting.markdown_table(
      ["example", "predicted (cnnlab)", "real op output", "agree"],
      [[r["example"], r["predicted"], r["measured"], _yes(_example_agrees(r))] for r in results["seed_examples"]])
  rel = reporting.markdown_table(["Dumoulin & Visin relation", "cases", "lax shape agrees"],
                                 [[r, v["cases"], v["agree"]] for r, v in sw["by_relation"].items()])
  other = reporting.markdown_table(["check", "cases", "agree"], [
      ["'SAME' / 'VALID' vs lax string padding", sw["named_paddings"]["cases"], sw["named_paddings"]["agree"]],
      ["transposed conv o' = s(i'-1) + a + k̂ - 2p vs nn.ConvTranspose", sw["transposed"]["cases"],
       sw["transposed"]["agree"]],
      ["transpose of each conv maps o back to i (a = (i + 2p - k̂) mod s)", sw["transpose_of_conv"]["cases"],
       sw["transpose_of_conv"]["agree"]],
      ["impossible geometry: GeometryError here, empty output in lax", sw["impossible"]["cases"],
       sw["impossible"]["lax_empty"]],
  ])
  grid = (f"i ≤ {config.max_input}, k ≤ {config.max_kernel}, s ≤ {config.max_stride}, p ≤ {config.max_padding}, "
          f"d ≤ {config.max_dilation}")
  return "\n".join(["# Convolution arithmetic\n", "## Worked examples\n", examples,
                    f"\n## Sweep ({grid}): {len(sw['mismatches'])} mismatched shapes (listed in results.json)\n",
                    rel, "", other, tables.verdicts_section(CLAIMS, results)])


def _judge_arithmetic(results: dict) -> ledger.Finding:
  sweep = results["sweep"]
  groups = [*sweep["by_relation"].values(), sweep["transposed"], sweep["transpose_of_conv"], sweep["named_paddings"]]
  cases, agree = sum(g["cases"] for g in groups), sum(g["agree"] for g in groups)
  seeds = results["seed_examples"]
  seed_ok = sum(_example_agrees(e) for e in seeds)
  empty = sweep["impossible"]
  return ledger.Finding(f"{agree:,}/{cases:,} swept shapes predicted exactly (plus {seed_ok}/{len(seeds)} textbook "
                        f"examples; {empty['lax_empty']}/{empty['cases']} impossible geometries refused)",
                        verdicts.from_counts(agree + seed_ok + empty["lax_empty"], cases + len(seeds) + empty["cases"]))


CLAIMS = [
    ledger.Claim("conv_arithmetic", "Output sizes follow o = floor((i + 2p - k')/s) + 1 with k' = k + (k-1)(d-1), "
                 "and o' = s(i'-1) + a + k' - 2p for transposed convolutions ('same' padding keeps i/s).",
                 "Dumoulin & Visin 2016", "cnnlab.ops.conv_arithmetic's prediction vs the shape of the real lax / flax "
                 "op over a grid of (i, k, s, p, d)", _judge_arithmetic),
]
