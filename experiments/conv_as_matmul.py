"""A CNN convolution is a series of dot products (im2col x matrix), and it is cross-correlation, not convolution.

Measures the largest difference between a direct float64 loop, im2col + matmul and lax convolutions over
strides, padding, dilation, groups, depthwise, 1-D and lhs dilation; one output against the dot product of
its im2col row with the filter; cnnlab's conv against scipy's correlate2d and convolve2d; and, like against
like (float32, all three compiled by XLA on one machine), the wall time of a direct loop (one output position
per iteration), im2col + one matmul and lax's fused conv on real layers, in interleaved rounds. The CLAIMS
judges turn these into verdicts; the timing one reads the per-round speed-up with a 95 % interval.

Command: python run.py --exp=conv_as_matmul
Result:  see REPORT.md (ledger) and the run's results.md.
"""

import math
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.signal
import skimage.data
from jax import lax

import experiments
from cnnlab.ops import conv_ops
from cnnlab.report import ledger, rendering as reporting, stats, tables, verdicts
from cnnlab.errors import UserError

# name -> (input shape without batch, kernel shape, strides, padding, rhs dilation, groups).
LAYERS = {
    "lenet_c1": ((32, 32, 1), (5, 5, 1, 6), (1, 1), "VALID", (1, 1), 1),
    "cifar_3x3": ((32, 32, 32), (3, 3, 32, 64), (1, 1), "SAME", (1, 1), 1),
    "alexnet_conv1": ((227, 227, 3), (11, 11, 3, 96), (4, 4), "VALID", (1, 1), 1),
    "alexnet_conv2_grouped": ((27, 27, 96), (5, 5, 48, 256), (1, 1), ((2, 2), (2, 2)), (1, 1), 2),
    "dilated_3x3_d2": ((32, 32, 16), (3, 3, 16, 16), (1, 1), "SAME", (2, 2), 1),
    "tiny": ((9, 9, 2), (3, 3, 2, 4), (2, 2), "SAME", (1, 1), 1),
}

# Geometries for the agreement check: (x shape, w shape, conv kwargs).
CASES = {
    "3x3, stride 1, VALID": ((2, 9, 9, 3), (3, 3, 3, 4), {}),
    "3x3, stride 2, SAME": ((2, 10, 9, 3), (3, 3, 3, 4), dict(window_strides=(2, 2), padding="SAME")),
    "5x4, dilation (2, 1), padding ((2, 1), (0, 3))": (
        (2, 12, 11, 3), (5, 4, 3, 4), dict(padding=((2, 1), (0, 3)), rhs_dilation=(2, 1))),
    "grouped 3x3, 4 groups": ((2, 8, 8, 8), (3, 3, 2, 8), dict(padding="SAME", feature_group_count=4)),
    "depthwise 3x3 (groups = channels)": ((2, 8, 8, 6), (3, 3, 1, 12), dict(feature_group_count=6)),
    "1x1 (pointwise)": ((2, 7, 7, 5), (1, 1, 5, 3), {}),
    "1-D, kernel 5, stride 3": ((2, 20, 3), (5, 3, 4), dict(window_strides=(3,), padding="SAME")),
    "lhs dilation 2 (a transposed conv), negative pad": (
        (2, 6, 6, 3), (3, 3, 3, 2), dict(padding=((2, -1), (1, 1)), lhs_dilation=(2, 2))),
}


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  """The standard config; `quick` shrinks it for smoke tests."""
  c = experiments.new_config(quick)
  c.seed = 0                    # random inputs and kernels
  c.timing_layers = "lenet_c1,cifar_3x3,alexnet_conv1,alexnet_conv2_grouped,dilated_3x3_d2"  # keys of LAYERS
  c.batch = 8                   # batch size of the timed layers
  c.repeats = 10                # timed rounds per layer, each calling the loop, im2col and lax once (>= 2)
  c.image_crop = 96             # side of the camera-image crop for the correlation-vs-convolution check
  if quick:
    c.timing_layers, c.batch, c.repeats, c.image_crop = "tiny", 2, 3, 24
  return c


def _seconds(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def agreement(rng: np.random.Generator) -> list[dict[str, Any]]:
  """Max abs differences of the three implementations on each geometry of `CASES`."""
  rows = []
  for name, (xs, ws, kw) in CASES.items():
    x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
    ref = conv_ops.conv_direct(x, w, **kw)
    lax_out = np.asarray(jax.jit(lambda x, w, kw=kw: conv_ops.conv_lax(x, w, **kw))(x, w))
    col_out = np.asarray(jax.jit(lambda x, w, kw=kw: conv_ops.conv_im2col(x, w, **kw))(x, w))
    rows.append({"case": name, "output": tuple(ref.shape), "im2col_vs_direct": float(np.abs(col_out - ref).max()),
                 "lax_vs_direct": float(np.abs(lax_out - ref).max()),
                 "im2col_vs_lax": float(np.abs(col_out - lax_out).max())})
  return rows


def dot_product_check(rng: np.random.Generator) -> dict[str, Any]:
  """One output value is the dot product of its im2col row with the flattened filter."""
  x = rng.standard_normal((1, 9, 9, 3)).astype(np.float32)
  w = rng.standard_normal((3, 3, 3, 5)).astype(np.float32)
  rows = np.asarray(conv_ops.im2col(x, (3, 3), (2, 2), "SAME"))  # (1, 5, 5, 9, 3)
  out = np.asarray(conv_ops.conv_lax(x, w, (2, 2), "SAME"))
  pos, f = (3, 1), 4
  dot = float(np.dot(rows[0, pos[0], pos[1]].ravel(), w[..., f].ravel()))
  return {"position": pos, "filter": f, "dot_product": dot, "conv_output": float(out[0, pos[0], pos[1], f])}


def correlation_vs_convolution(crop: int) -> list[dict[str, Any]]:
  """cnnlab's conv against scipy's correlate2d / convolve2d on a real photo and an asymmetric kernel."""
  img = skimage.data.camera()[200:200 + crop, 200:200 + crop].astype(np.float64) / 255.0
  ker = np.array([[1.0, 2.0, 0.0], [0.0, -1.0, -3.0], [0.5, 0.0, 1.0]])  # No symmetry: a flip changes it.
  x, w = img[None, :, :, None], ker[:, :, None, None]
  ours = conv_ops.conv_direct(x, w)[0, :, :, 0]
  ours_lax = np.asarray(conv_ops.conv_lax(x.astype(np.float32), w.astype(np.float32)))[0, :, :, 0]
  true = np.asarray(conv_ops.true_convolution(x.astype(np.float32), w.astype(np.float32)))[0, :, :, 0]
  corr = scipy.signal.correlate2d(img, ker, mode="valid")
  conv = scipy.signal.convolve2d(img, ker, mode="valid")
  err = lambda a, b: float(np.abs(a - b).max())
  return [
      {"ours": "conv_direct (float64)", "scipy": "correlate2d", "max_abs_diff": err(ours, corr)},
      {"ours": "conv_lax (float32)", "scipy": "correlate2d", "max_abs_diff": err(ours_lax, corr)},
      {"ours": "conv_lax (float32)", "scipy": "convolve2d", "max_abs_diff": err(ours_lax, conv)},
      {"ours": "true_convolution = conv_lax with flipped kernel", "scipy": "convolve2d",
       "max_abs_diff": err(true, conv)},
  ]


def _timing_layers(config: ml_collections.ConfigDict) -> list[str]:
  names = [n.strip() for n in config.timing_layers.split(",") if n.strip()]
  for name in names:
    if name not in LAYERS:
      raise UserError(f"unknown timing layer {name!r}; known: {', '.join(LAYERS)}")
  return names


def conv_loop(x: jax.Array, w: jax.Array, window_strides: Sequence[int], padding, rhs_dilation: Sequence[int],
              feature_group_count: int) -> jax.Array:
  """The definition as a compiled float32 loop (2-D): one output position per iteration, its window dotted with
  every filter, so the work never becomes one large primitive."""
  g, (kh, kw), (sh, sw), (dh, dw) = feature_group_count, w.shape[:2], window_strides, rhs_dilation
  span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
  pads = lax.padtype_to_pads(x.shape[1:3], span, window_strides, padding) if isinstance(padding, str) else padding
  xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  out = jax.eval_shape(lambda: conv_ops.conv_lax(x, w, window_strides, padding, rhs_dilation=rhs_dilation,
                                                 feature_group_count=g)).shape
  cg, og = w.shape[2], w.shape[3] // g
  filters = w.reshape(kh * kw, cg, g, og)

  def body(p, y):
    i, j = p // out[2], p % out[2]
    window = lax.dynamic_slice(xp, (0, i * sh, j * sw, 0), (x.shape[0], *span, x.shape[3]))[:, ::dh, ::dw]
    v = jnp.einsum("nkgc,kcgo->ngo", window.reshape(x.shape[0], kh * kw, g, cg), filters)
    return lax.dynamic_update_slice(y, v.reshape(x.shape[0], 1, 1, g * og), (0, i, j, 0))

  return lax.fori_loop(0, out[1] * out[2], body, jnp.zeros(out, x.dtype))


def timing(config: ml_collections.ConfigDict, rng: np.random.Generator) -> list[dict[str, Any]]:
  """Per-round wall times of the compiled loop, im2col and lax on each layer of `config.timing_layers`."""
  rows = []
  for name in _timing_layers(config):
    xs, ws, s, p, d, g = LAYERS[name]
    kw = dict(window_strides=s, padding=p, rhs_dilation=d, feature_group_count=g)
    x = rng.standard_normal((config.batch, *xs)).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    row = {"layer": name, "input": (config.batch, *xs), "kernel": ws}
    ref = conv_ops.conv_direct(x, w, **kw)
    fns = {}
    for impl, fn in (("loop", conv_loop), ("im2col", conv_ops.conv_im2col), ("lax", conv_ops.conv_lax)):
      f = jax.jit(lambda x, w, fn=fn: fn(x, w, **kw))
      out = np.asarray(f(x, w))  # Compiles.
      row[f"{impl}_err"] = float(np.abs(out - ref).max() / np.abs(ref).max())
      fns[impl] = lambda f=f: f(x, w)
    # Interleaved rounds, the order rotating, so that every implementation sees the same machine load (the report
    # runs another experiment beside this one): a round's times are a pair of like measurements.
    times = {impl: [] for impl in fns}
    order = list(fns)
    for r in range(config.repeats):
      for impl in order[r % 3:] + order[:r % 3]:
        times[impl].append(_seconds(fns[impl]))
    row["times_s"] = times
    n_out = int(np.prod(ref.shape[:-1]))
    row["matmul"] = f"{g} x ({n_out:,} x {int(np.prod(ws[:-1])):,}) @ ({int(np.prod(ws[:-1])):,} x {ws[-1] // g})"
    row["im2col_blowup"] = n_out * int(np.prod(ws[:-2])) * xs[-1] / x.size  # Patch-matrix size / input size.
    rows.append(row)
  return rows


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the experiment, writes results.json, results.md (and figures) to `workdir`, returns the results."""
  _timing_layers(config)  # Fail on a bad name before the slow parts.
  if config.repeats < 2:
    raise UserError(f"conv_as_matmul needs repeats >= 2 (an interval needs two timed rounds), got {config.repeats}")
  rng = np.random.default_rng(config.seed)
  results = {"agreement": agreement(rng), "dot_product": dot_product_check(rng),
             "correlation": correlation_vs_convolution(config.image_crop), "timing": timing(config, rng),
             "backend": jax.default_backend(), "repeats": config.repeats}
  results["smoke_test"] = config.smoke_test
  reporting.write_results(workdir, results, _markdown(results))
  return results


def _markdown(results: dict) -> str:
  agree = reporting.markdown_table(
      ["geometry", "output", "max abs: im2col vs direct", "lax vs direct", "im2col vs lax"],
      [[r["case"], "x".join(map(str, r["output"])), r["im2col_vs_direct"], r["lax_vs_direct"], r["im2col_vs_lax"]]
       for r in results["agreement"]])
  dp = results["dot_product"]
  corr = reporting.markdown_table(["cnnlab", "scipy.signal", "max abs difference"],
                                  [[r["ours"], r["scipy"], r["max_abs_diff"]] for r in results["correlation"]])
  ms = lambda r, k: 1e3 * float(np.median(r["times_s"][k]))
  speedup = lambda e: "{:.1f}x [{:.1f}, {:.1f}]".format(10 ** e.estimate, *(10 ** v for v in e.interval()))
  tm = reporting.markdown_table(
      ["layer", "input", "kernel", "im2col matmul (groups x rows x cols @ ...)", "patch / input size", "loop ms",
       "im2col ms", "lax ms", "loop / faster primitive (95 % CI)", "rel. err loop", "im2col", "lax"],
      [[r["layer"], "x".join(map(str, r["input"])), "x".join(map(str, r["kernel"])), r["matmul"], r["im2col_blowup"],
        ms(r, "loop"), ms(r, "im2col"), ms(r, "lax"), speedup(e), r["loop_err"], r["im2col_err"], r["lax_err"]]
       for r, (_, e) in zip(results["timing"], _speedups(results))])
  return "\n".join([
      "# Convolution as matrix multiplication\n",
      "## Three implementations agree (float32 vs the float64 definition)\n", agree,
      f"\nOne output, position {dp['position']}, filter {dp['filter']}: dot product of its im2col row with the "
      f"filter = {dp['dot_product']:.6f}; conv output = {dp['conv_output']:.6f}.\n",
      "## CNN \"convolution\" is cross-correlation (camera photo, asymmetric 3x3 kernel)\n", corr,
      f"\n## Time on {results['backend']}: float32, all compiled (median of {results['repeats']} interleaved "
      "rounds; the speed-up is the geometric mean of the per-round ratios, its interval a paired t interval on "
      "their logarithms)\n", tm,
      tables.verdicts_section(CLAIMS, results),
  ])


_AGREE_TOL = 1e-4  # float32 agreement: inputs and kernels are O(1), so rounding stays far below this


def _judge_dot_products(results: dict) -> ledger.Finding:
  worst = max(max(r["im2col_vs_direct"], r["lax_vs_direct"]) for r in results["agreement"])
  dp = results["dot_product"]
  dp_err = abs(dp["dot_product"] - dp["conv_output"])
  return ledger.Finding(f"im2col matmul and lax conv equal the direct sum to {worst:.1e} on "
                        f"{len(results['agreement'])} cases; one output minus its dot product: {dp_err:.1e}",
                        verdicts.from_flag(worst < _AGREE_TOL and dp_err < _AGREE_TOL))


def _judge_correlation(results: dict) -> ledger.Finding:
  rows = {(r["ours"].split(" ")[0], r["scipy"]): r["max_abs_diff"] for r in results["correlation"]}
  corr, conv = rows[("conv_lax", "correlate2d")], rows[("conv_lax", "convolve2d")]
  return ledger.Finding(f"cnnlab conv vs scipy correlate2d {corr:.1e}, vs convolve2d {conv:.2f}",
                        verdicts.from_flag(corr < _AGREE_TOL < conv))


def _speedups(results: dict) -> list[tuple[str, stats.Effect]]:
  """Per layer: log10 of (loop time / time of the faster primitive), paired by round."""
  return [(r["layer"], stats.paired(np.log10(r["times_s"]["loop"]),
                                    np.log10(np.minimum(r["times_s"]["im2col"], r["times_s"]["lax"]))))
          for r in results["timing"]]


def _judge_parallel(results: dict) -> ledger.Finding:
  effects = _speedups(results)
  verdict, figure = stats.judge(_RULE_PARALLEL, effects, digits=2, unit=" decades")
  ratios = ", ".join(f"{layer} {10 ** e.estimate:.1f}x" for layer, e in effects)
  return ledger.Finding(f"faster of im2col+matmul and lax conv vs a compiled float32 loop over output positions "
                        f"({results['backend']}): {ratios}; log10 speed-up per layer: "
                        + figure.replace("seeds would decide", "timed rounds would decide"), verdict)


# "Efficient": mapping the conv onto one big primitive must at least halve the time of the same float32 arithmetic
# done one output position at a time by the same compiler; a smaller gain would not make the primitive the reason.
_RULE_PARALLEL = stats.Rule("log10 of (compiled float32 direct-loop time / time of the faster of im2col+matmul and "
                            "lax conv), per layer, paired by interleaved timing round", "greater", math.log10(2))

CLAIMS = [
    ledger.Claim("conv_as_dot_products", "A conv layer computes dot products of the filter with image patches, i.e. "
                 "one matrix multiplication after im2col.", "CS231n notes; Goodfellow et al. 2016, ch. 9",
                 f"max abs difference of im2col-matmul and lax conv from a direct float64 sum < {_AGREE_TOL:g}",
                 _judge_dot_products),
    ledger.Claim("conv_is_correlation", "What deep-learning libraries call convolution is cross-correlation (the "
                 "kernel is not flipped).", "Goodfellow et al. 2016, ch. 9.1",
                 f"cnnlab's conv equals scipy.signal.correlate2d (< {_AGREE_TOL:g}) and differs from convolve2d",
                 _judge_correlation),
    ledger.Claim("efficient_parallel", "Convolution maps onto efficient parallel hardware primitives (one big "
                 "matrix multiplication / a fused conv kernel).", "CNN explainers (GPU training of AlexNet)",
                 "wall time, float32 and compiled alike: a direct loop over output positions vs the faster of "
                 "im2col+matmul and lax conv, per layer, in interleaved rounds; the speed-up's 95 % interval must "
                 "clear 2x on every layer (Holm across layers)", _judge_parallel, rule=_RULE_PARALLEL),
]
