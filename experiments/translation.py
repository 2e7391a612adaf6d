"""Convolution is translation-equivariant, pooling makes CNNs translation-invariant, CNNs recognise a pattern anywhere.

Three measurements on real 8x8 digits centred on a larger zero canvas (16x16 by default):
1. Equivariance error ‖f(shift(x)) − shift(f(x))‖ / ‖f(x)‖ of random-init conv stacks (depth 1-3),
   circular vs zero padding, stride 1 vs stride 2 vs max pooling vs BlurPool, on digits and on noise.
2. Invariance: train on centred digits, test on digits translated by 0…k pixels, for an MLP, a
   locally-connected net, a CNN with a flatten head and a CNN with a global-average-pool head.
3. Shift consistency (Zhang 2019): how often the predicted class agrees between two random
   translations, with max pooling vs anti-aliased max-blur pooling (`cnnlab.models.blurpool`).
15 trainings of 400 steps; the CLAIMS judges turn the measurements into verdicts.

Command:  python run.py --exp=translation
Result:   see REPORT.md (ledger) and the run's results.md.
"""

import functools

import flax.linen as nn
import jax
import ml_collections
import numpy as np

import experiments
from cnnlab import data, models
from cnnlab.models import blurpool
from cnnlab.ops import shift
from cnnlab.report import figures, ledger, rendering as reporting, tables, verdicts
from cnnlab.runtime import prng
from cnnlab.training import sweep, train

MODEL_LABELS = {"mlp": "MLP", "lcn": "LCN (flatten head)", "cnn_flat": "CNN, max pool, flatten head",
                "cnn_gap": "CNN, max pool, GAP head", "cnn_gap_blur": "CNN, max-blur pool, GAP head"}
_CNNS = ("cnn_flat", "cnn_gap", "cnn_gap_blur")
STACKS = ("stride1", "stride2", "maxpool", "maxblur")  # downsampling after each conv of the probe stacks


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = experiments.new_config(quick)
  c.data = data.get_config()
  c.data.name = "digits"           # 8x8 real digits: small enough that a canvas leaves room to translate
  c.train = train.get_config()
  c.train.steps = 400
  c.train.batch_size = 64
  c.train.learning_rate = 2e-3
  c.train.log_every = 100
  c.train.checkpoint_every = 400
  c.canvas = 16                    # digits are centred on a canvas x canvas zero image (margin 4 each side)
  c.max_shift = 4                  # test-time translations 0..max_shift pixels (up to the margin: no cropping)
  c.consistency_shift = 3          # Zhang consistency: two random offsets in [-k, k]^2 per test image
  c.features = (16, 32)            # conv channels per stage (CNNs and LCN)
  c.mlp_hidden = (256, 256)        # MLP hidden widths
  c.probe_stacks = STACKS          # downsampling of the probe stacks: stride1, stride2, maxpool, maxblur
  c.probe_features = 8             # channels of the random-init conv stacks of the equivariance probe
  c.probe_depth = 3                # conv layers of those stacks
  c.probe_examples = 64            # test images (and noise images) fed to the probe
  c.seeds = 3                      # seeds per model (init, batch order) and per random probe stack
  c.exact_tol = 1e-4               # relative error below this counts as exactly equivariant (float32 rounding)
  c.robust_ratio = 0.9             # "invariant": mean accuracy over shifts 1..k at least this fraction of shift 0
  if quick:
    c.train.steps, c.train.batch_size, c.train.eval_batch_size = 20, 32, 200
    c.train.log_every, c.train.checkpoint_every, c.train.tensorboard = 10, 20, False
    c.canvas, c.max_shift, c.consistency_shift = 12, 2, 2
    c.features, c.mlp_hidden, c.seeds = (4, 8), (32,), 2
    c.probe_stacks, c.probe_features, c.probe_depth, c.probe_examples = ("stride1", "stride2"), 4, 2, 8
  return c


class ProbeStack(nn.Module):
  """Random-init conv stack returning every layer's feature map (for the equivariance probe)."""
  features: int
  depth: int
  kind: str      # one of STACKS
  padding: str   # 'CIRCULAR' | 'SAME' (zeros)

  @nn.compact
  def __call__(self, x):
    maps = []
    for i in range(self.depth):
      stride = 2 if self.kind == "stride2" else 1
      x = nn.relu(nn.Conv(self.features, (3, 3), strides=(stride, stride), padding=self.padding, name=f"conv{i}")(x))
      if self.kind == "maxpool":
        x = nn.max_pool(x, (2, 2), (2, 2))
      elif self.kind == "maxblur":
        # Circular blur padding with circular conv padding, so that only subsampling can break equivariance.
        circular = self.padding == "CIRCULAR"
        x = jax.numpy.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)], mode="wrap" if circular else "constant")
        x = blurpool.blur_pool(blurpool.max_stride1(x), pad_mode="circular" if circular else "zero")
      maps.append(x)
    return maps


def probe_equivariance(config: ml_collections.ConfigDict, x_digits: np.ndarray) -> list[dict]:
  """Equivariance error per (stack, padding, input, depth, shift) over random inits."""
  rng = np.random.default_rng(0)
  inputs = {"digits": x_digits, "noise": rng.standard_normal(x_digits.shape).astype(np.float32)}
  rows = []
  for kind in config.probe_stacks:
    for padding in ("CIRCULAR", "SAME"):
      net = ProbeStack(config.probe_features, config.probe_depth, kind, padding)
      apply = jax.jit(net.apply)
      for seed in range(config.seeds):
        with prng.classic_threefry():
          params = net.init(jax.random.key(seed), inputs["digits"][:1])
        for input_name, x in inputs.items():
          for depth in range(config.probe_depth):
            stride = 1 if kind == "stride1" else 2 ** (depth + 1)
            f = lambda v, d=depth: apply(params, v)[d]
            for shift_name, s in (("1 px", 1), ("stride", stride)):
              # Circular input shifts: on zero-bordered canvas digits they equal zero-fill shifts.
              err = shift.equivariance_error(f, x, (s, s), stride, "circular")
              rows.append({"stack": kind, "padding": padding, "input": input_name, "depth": depth + 1,
                           "shift": shift_name, "seed": seed, "error": err})
  return rows


def build_models(config: ml_collections.ConfigDict, num_classes: int) -> dict:
  conv = dict(features=tuple(config.features), num_classes=num_classes)
  return {"mlp": models.create("mlp", hidden=tuple(config.mlp_hidden), num_classes=num_classes),
          "lcn": models.create("lcn", **conv),
          "cnn_flat": models.create("poolnet", downsample="max", head="flatten", **conv),
          "cnn_gap": models.create("poolnet", downsample="max", head="gap", **conv),
          "cnn_gap_blur": models.create("poolnet", downsample="maxblur", head="gap", **conv)}


def shift_scores(config: ml_collections.ConfigDict, state, ds: data.Dataset, seed: int) -> dict:
  """A trained model's test accuracy at each shift, its robustness (shifted / unshifted) and shift consistency."""
  rec = {f"acc_shift{s}": shift.shifted_accuracy(state, ds.x_test, ds.y_test, s, "zero", config.train.eval_batch_size)
         for s in range(config.max_shift + 1)}
  rec["robustness"] = float(np.mean([rec[f"acc_shift{s}"] for s in range(1, config.max_shift + 1)]) / rec["acc_shift0"])
  rec["consistency"] = shift.consistency(state, ds.x_test, config.consistency_shift, seed=1000 + seed,
                                         batch_size=config.train.eval_batch_size)
  return rec


def measure(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Equivariance errors of the probe stacks; per-seed accuracy vs shift, robustness and consistency per model."""
  ds = shift.canvas_dataset(data.load(config.data), config.canvas)
  probe = probe_equivariance(config, ds.x_test[:config.probe_examples])
  err = sweep.group(probe, ("stack", "padding", "input", "depth", "shift"), "error")
  nets = build_models(config, ds.num_classes)
  trials = [sweep.Trial(f"{m}_s{seed}", net, ds, seed, config.train, {"model": m},
                        after_fit=functools.partial(shift_scores, config, seed=seed))
            for seed in range(config.seeds) for m, net in nets.items()]
  records = sweep.run_trials(workdir, trials, progress=config.train.progress)
  by_model = lambda metric: {m: v for (m,), v in sweep.group(records, ("model",), metric).items()}
  acc = {s: by_model(f"acc_shift{s}") for s in range(config.max_shift + 1)}
  return {"dataset": ds.name, "n_test": len(ds.y_test), "exact_tol": config.exact_tol,
          "robust_ratio": config.robust_ratio, "equivariance": {" / ".join(map(str, k)): v for k, v in err.items()},
          "accuracy_vs_shift": {f"{m}@{s}": acc[s][m] for m in nets for s in acc},
          "robustness": by_model("robustness"), "consistency": by_model("consistency"),
          "params": {r["model"]: r["params"] for r in records}, "records": records, "probe": probe}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Measures, writes results.json, results.md and the figures to `workdir`; returns the measurements."""
  results = measure(config, workdir)
  results["smoke_test"] = config.smoke_test
  md = render(results, config)
  _plot(workdir, config, results)
  return reporting.publish(workdir, results, md)


def _shifts(results: dict) -> list[int]:
  return sorted({int(k.split("@")[1]) for k in results["accuracy_vs_shift"]})


def _accuracy(results: dict, model: str, s: int) -> list[float]:
  return results["accuracy_vs_shift"][f"{model}@{s}"]


def _exact(results: dict) -> dict[str, bool]:
  """Per probe case: is the mean equivariance error below float rounding (`exact_tol`)?"""
  return {k: float(np.mean(v)) < results["exact_tol"] for k, v in results["equivariance"].items()}


def _robust(results: dict, model: str) -> bool:
  """Does `model` keep at least `robust_ratio` of its accuracy under shifts (mean over seeds)?"""
  return float(np.mean(results["robustness"][model])) >= results["robust_ratio"]


def render(results: dict, config: ml_collections.ConfigDict) -> str:
  """results.md: the equivariance table, accuracy vs shift, and the verdicts of CLAIMS."""
  err, robust, consist = results["equivariance"], results["robustness"], results["consistency"]
  depths, shifts = range(1, config.probe_depth + 1), _shifts(results)
  eq_rows = [[k, "circular" if p == "CIRCULAR" else "zero", i]
             + [f"{np.mean(err[f'{k} / {p} / {i} / {d} / {s}']):.2g}" for s in ("1 px", "stride") for d in depths]
             for k in config.probe_stacks for p in ("CIRCULAR", "SAME") for i in ("digits", "noise")]
  exact = _exact(results)
  conv_exact = all(exact[f"stride1 / CIRCULAR / {i} / {d} / 1 px"] for i in ("digits", "noise") for d in depths)
  gap_beats = {m: verdicts.clearly_greater(robust["cnn_gap"], robust[m]) for m in ("mlp", "lcn", "cnn_flat")}
  yn = lambda b: "yes" if b else "no"
  return "".join([
      f"# Translation: equivariance, invariance and where they break (`{results['dataset']}`)\n\n",
      f"{config.seeds} seeds; {config.train.steps} Adam steps of batch {config.train.batch_size} on centred "
      f"digits; {results['n_test']} test digits. Accuracies in %, mean ± std over seeds.\n\n",
      "## 1. Equivariance error of random-init conv stacks\n\n",
      "‖f(shift(x)) − shift(f(x))‖ / ‖f(x)‖ after each conv layer (mean over seeds). A shift of 1 px and a "
      "shift by the layer's total stride (stride1: 1 px). When the shift is not a multiple of the stride, "
      "the best of the two nearest integer output shifts is used.\n\n",
      reporting.markdown_table(["stack", "padding", "input"] + [f"1 px, layer {d}" for d in depths]
                               + [f"stride, layer {d}" for d in depths], eq_rows),
      "\n## 2. Accuracy vs test-time translation (trained on centred digits)\n\n",
      reporting.markdown_table(
          ["model", "params"] + [f"shift {s}" for s in shifts] + ["robustness", "consistency"],
          [[MODEL_LABELS[m], results["params"][m]]
           + [reporting.fmt_mean_std(_accuracy(results, m, s), 100) for s in shifts]
           + [reporting.fmt_mean_std(robust[m], 1, 2), reporting.fmt_mean_std(consist[m], 100)]
           for m in MODEL_LABELS]),
      f"\nShift s: accuracy averaged over the 4 axis-aligned translations by s px (zero fill). Robustness: mean "
      f"accuracy over shifts 1..{config.max_shift} divided by accuracy at 0. Consistency (Zhang 2019): % of test "
      f"digits whose predicted class is the same under two random translations in [-{config.consistency_shift}, "
      f"{config.consistency_shift}]².\n\n",
      tables.verdicts_section(CLAIMS, results),
      f"\nError < {config.exact_tol:g} in {sum(exact.values())}/{len(exact)} probe cases. Stride-1 conv with "
      f"circular padding is exact at every depth: {yn(conv_exact)}; strided subsampling (stride 2, pooling) breaks "
      "equivariance for shifts that are not multiples of the total stride, and zero padding breaks it at the border "
      "when content reaches the border (noise).\n",
      f"Robustness ≥ {config.robust_ratio} for {sum(_robust(results, m) for m in _CNNS)}/{len(_CNNS)} CNN "
      "variants. CNN+GAP clearly more robust than: "
      + ", ".join(f"{MODEL_LABELS[m]} {yn(v)}" for m, v in gap_beats.items()) + ".\n",
      "\n![accuracy vs shift](accuracy_vs_shift.png)\n\n![equivariance](equivariance.png)\n"])


def _plot(workdir: str, config: ml_collections.ConfigDict, results: dict) -> None:
  fig, ax = reporting.new_figure(figsize=(6, 4))
  shifts, err = _shifts(results), results["equivariance"]
  # Population std (ddof=0) in these error bars, as this plot has always drawn them; the tables use ddof=1.
  figures.errorbar_curves(ax, shifts, {MODEL_LABELS[m]: [_accuracy(results, m, s) for s in shifts]
                                       for m in MODEL_LABELS}, scale=100, ddof=0, logx=False,
                          xlabel="test-time translation (px)", ylabel="test accuracy (%)")
  reporting.save_figure(fig, workdir, "accuracy_vs_shift")
  fig, ax = reporting.new_figure(figsize=(7, 4))
  depths = range(1, config.probe_depth + 1)
  for k in config.probe_stacks:
    for p, ls in (("CIRCULAR", "-"), ("SAME", "--")):
      ax.plot(depths, [max(np.mean(err[f"{k} / {p} / noise / {d} / 1 px"]), 1e-8) for d in depths], ls, marker="o",
              label=f"{k}, {'circular' if p == 'CIRCULAR' else 'zero'} pad")
  ax.set_yscale("log")
  ax.set_xlabel("conv layer")
  ax.set_ylabel("equivariance error, 1 px shift (noise input)")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  reporting.save_figure(fig, workdir, "equivariance")


def _judge_equivariance(results: dict) -> ledger.Finding:
  err = results["equivariance"]
  stacks = dict.fromkeys(k.split(" / ")[0] for k in err)  # probe stacks present, in order
  means = {st: float(np.mean([np.mean(v) for k, v in err.items() if k.startswith(f"{st} / CIRCULAR")]))
           for st in stacks}
  return ledger.Finding("relative error of circular-padded random conv stacks: " + ", ".join(
      f"{st} {e:.1e}" if e < 1e-3 else f"{st} {e:.2f}" for st, e in means.items()) + " (exact only without "
      "subsampling)", verdicts.from_counts(*verdicts.count_true(_exact(results))))


_SHORT = {"mlp": "MLP", "lcn": "LCN", "cnn_flat": "CNN+flatten", "cnn_gap": "CNN+GAP",
          "cnn_gap_blur": "CNN+GAP+BlurPool"}


def _kept(results: dict, models_) -> str:
  return (f"fraction of accuracy kept under 1-{_shifts(results)[-1]} px shifts: "
          + ", ".join(f"{_SHORT[m]} {np.mean(results['robustness'][m]):.2f}" for m in models_))


def _judge_pooling_invariance(results: dict) -> ledger.Finding:
  # The flatten-head CNN isolates pooling: its only translation-tolerant parts are the two max pools.
  return ledger.Finding(_kept(results, list(results["robustness"])), verdicts.from_flag(_robust(results, "cnn_flat")))


def _judge_anywhere(results: dict) -> ledger.Finding:
  held = verdicts.count_true([_robust(results, m) for m in _CNNS])
  return ledger.Finding(_kept(results, _CNNS), verdicts.from_counts(*held))


def _judge_blurpool(results: dict) -> ledger.Finding:
  c = results["consistency"]
  return ledger.Finding(f"shift consistency {reporting.fmt_mean_std(c['cnn_gap'], 100)} % (max pool) vs "
                        f"{reporting.fmt_mean_std(c['cnn_gap_blur'], 100)} % (max-blur pool)",
                        verdicts.from_flag(verdicts.clearly_greater(c["cnn_gap_blur"], c["cnn_gap"])))


CLAIMS = [
    ledger.Claim("translation_equivariance", "Convolution is translation-equivariant: shifting the input shifts the "
                 "feature map.", "Goodfellow et al. 2016, ch. 9.2; Wikipedia, 'Convolutional neural network'",
                 "relative error |f(shift x) - shift f(x)| / |f(x)| of random conv stacks (depth 1-3; stride 1, "
                 "stride 2, pooling; circular and zero padding); a case holds below float rounding (1e-4)",
                 _judge_equivariance),
    ledger.Claim("pooling_invariance", "Pooling makes a CNN's prediction invariant to small translations.",
                 "Goodfellow et al. 2016, ch. 9.3; CNN explainers", "test accuracy under 1-4 px shifts of a max-pool "
                 "CNN with a flatten head trained on centred digits; supported if it keeps >= 90% of its accuracy",
                 _judge_pooling_invariance),
    ledger.Claim("recognise_anywhere", "A CNN recognises a pattern wherever it appears in the image.",
                 "CNN explainers", "each CNN variant (flatten head, GAP head, GAP + BlurPool) keeps >= 90% of its "
                 "accuracy under 1-4 px shifts", _judge_anywhere),
    ledger.Claim("blurpool_consistency", "Anti-aliasing before subsampling (BlurPool) makes CNNs more shift-"
                 "consistent.", "Zhang 2019", "how often the predicted class agrees between two random shifts, "
                 "max-blur vs max pooling, > 2 standard errors apart", _judge_blurpool),
]
