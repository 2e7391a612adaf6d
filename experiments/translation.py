"""Convolution is translation-equivariant, pooling makes CNNs translation-invariant, CNNs recognise a pattern anywhere.

On real 8x8 digits centred on a larger zero canvas: (1) the equivariance error ‖f(shift(x)) − shift(f(x))‖ / ‖f(x)‖
of random-init conv stacks (stride 1 / stride 2 / max pool / BlurPool, circular vs zero padding); (2) accuracy
under test-time shifts of 0…k px of nets trained on centred digits: an MLP, and CNNs with flatten
or global-average-pool (GAP) heads, each max-pool CNN beside a control of equal parameters with stride-2 convs
instead of pools; (3) shift consistency (Zhang 2019), max vs max-blur pooling; (4) beside the claims, the max-pool
CNNs trained again with random translations (`augment_arm`): how much of the loss under shifts is the training
distribution (Azulay & Weiss 2019). Each net at the best rate of `lr_grid` on a validation split of the training
set (the augmented twins at their net's rate); 10 seeds: 80 trainings of 1,500 cosine-decayed steps (the first
150 warming up); the CLAIMS judges pair the arms by seed and add the test set's sampling error.

Command:  python run.py --exp=translation
Result:   see REPORT.md (ledger) and the run's results.md.
"""

import functools

import ml_collections
import numpy as np

import experiments
from cnnlab import data, models
from cnnlab.data import augment
from cnnlab.errors import UserError
from cnnlab.ops import equivariance, shift
from cnnlab.report import figures, ledger, rates, rendering as reporting, stats, tables, verdicts
from cnnlab.training import sweep, train, tuning

CNNS = {"cnn_flat": ("max", "flatten"), "cnn_flat_stride": ("stride", "flatten"), "cnn_gap": ("max", "gap"),
        "cnn_gap_stride": ("stride", "gap"), "cnn_gap_blur": ("maxblur", "gap")}  # poolnet downsample, head
_DOWN = {"max": "max pool", "stride": "stride-2 conv (no pool)", "maxblur": "max-blur pool"}
_HEAD = {"flatten": "flatten", "gap": "GAP"}
# The MLP is context (no spatial structure at all); an LCN arm cost ~37 % of the trainings and no claim read it.
MODEL_LABELS = {"mlp": "MLP",
                **{m: f"CNN, {_DOWN[d]}, {_HEAD[h]} head" for m, (d, h) in CNNS.items()}}
# Each max-pool CNN's control: stride-2 convs in place of its pools (equal parameters and resolution): pooling alone.
CONTROLS = {"cnn_flat": "cnn_flat_stride", "cnn_gap": "cnn_gap_stride"}
GAP_NETS = ("cnn_gap", "cnn_gap_blur")  # the nets whose design claims invariance (GAP head)
AUGMENTED = ("cnn_flat", "cnn_gap")  # nets also trained with `augment_arm` (as "<net>+aug"); no claim reads them


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = experiments.new_config(quick)
  c.data = data.get_config()
  c.data.name = "digits"           # 8x8 real digits: small enough that a canvas leaves room to translate
  c.train = train.get_config()
  c.train.steps, c.train.batch_size, c.train.learning_rate = 1500, 64, 2e-3  # learning_rate: when lr_grid is ()
  # Cosine decay after a linear warm-up: 400 constant-rate steps left the GAP-head nets short of fitting
  # (docs/report.md, "Warm-up for the 2-D nets").
  c.train.schedule, c.train.warmup_steps = "cosine", 150
  c.lr_grid = (3e-3, 1e-2, 3e-2, 1e-1)  # Adam rates tried per net on a validation split (cnnlab.training.tuning)
  c.tuning_seeds = 3               # tuning trainings per (net, rate), seeds seed_base..: tuning.choose
  c.train.log_every, c.train.checkpoint_every = 100, 750
  c.canvas = 16                    # digits are centred on a canvas x canvas zero image (margin 4 each side)
  c.max_shift = 4                  # test-time translations 0..max_shift pixels (up to the margin: no cropping)
  c.consistency_shift = 3          # Zhang consistency: two random offsets in [-k, k]^2 per test image
  c.features = (16, 32)            # conv channels per stage of the CNNs
  c.mlp_hidden = (256, 256)        # MLP hidden widths
  c.probe_stacks = equivariance.STACKS  # downsampling of the probe stacks: stride1, stride2, maxpool, maxblur
  c.probe_features = 8             # channels of the random-init conv stacks of the equivariance probe
  c.probe_depth = 3                # conv layers of those stacks
  c.probe_examples = 64            # test images (and noise images) fed to the probe
  c.augment_arm = "translate:4"    # augmentation of the AUGMENTED nets' second training ('' drops that arm)
  c.seeds = 10                     # seeds per model (init, batch order) and per random probe stack
  # First seed: this run uses seeds seed_base .. seed_base + seeds - 1 (another base draws a disjoint set).
  c.seed_base = 0
  c.exact_tol = 1e-4               # relative error below this counts as exactly equivariant (float32 rounding)
  if quick:
    c.train.steps, c.train.batch_size, c.train.eval_batch_size, c.train.warmup_steps = 20, 32, 200, 0
    c.lr_grid, c.tuning_seeds = (), 1
    c.train.log_every, c.train.checkpoint_every, c.train.tensorboard = 10, 20, False
    c.canvas, c.max_shift, c.consistency_shift, c.augment_arm = 12, 2, 2, "translate:2"
    c.features, c.mlp_hidden, c.seeds = (4, 8), (32,), 2
    c.probe_stacks, c.probe_features, c.probe_depth, c.probe_examples = ("stride1", "stride2"), 4, 2, 8
  return c


def validate_config(config: ml_collections.ConfigDict) -> None:
  """One-line errors for impossible settings, before anything is written."""
  if config.seeds < 1 or config.seed_base < 0 or config.max_shift < 1:
    raise UserError("translation needs seeds >= 1, seed_base >= 0 and max_shift >= 1")
  augment.build(config.augment_arm)  # a one-line UserError for an unknown spec
  if bad := set(config.probe_stacks) - set(equivariance.STACKS):
    raise UserError(f"translation: unknown probe stacks {sorted(bad)}; use some of {equivariance.STACKS}")
  if config.lr_grid:
    tuning.check_grid(config.lr_grid, config.tuning_seeds)


def _seeds(config: ml_collections.ConfigDict) -> range:
  return range(config.seed_base, config.seed_base + config.seeds)


def probe_equivariance(config: ml_collections.ConfigDict, x_digits: np.ndarray) -> list[dict]:
  """Equivariance error per (stack, padding, input, depth, shift) over random inits (one per seed)."""
  return equivariance.probe(config.probe_stacks, config.probe_features, config.probe_depth, _seeds(config), x_digits)


def shift_scores(config: ml_collections.ConfigDict, state, ds: data.Dataset, seed: int) -> dict:
  """A trained model's test accuracy at each shift, the accuracy it keeps under shifts, and shift consistency."""
  return shift.robustness(state, ds.x_test, ds.y_test, config.max_shift, config.consistency_shift, 1000 + seed,
                          config.train.eval_batch_size)


def measure(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Equivariance errors of the probe stacks; per-seed accuracy vs shift, kept accuracy and consistency per model."""
  ds = shift.canvas_dataset(data.load(config.data), config.canvas)
  probe = probe_equivariance(config, ds.x_test[:config.probe_examples])
  err = sweep.group(probe, ("stack", "padding", "input", "depth", "shift"), "error")
  conv = dict(features=tuple(config.features), num_classes=ds.num_classes)
  nets = {"mlp": models.create("mlp", hidden=tuple(config.mlp_hidden), num_classes=ds.num_classes),
          **{m: models.create("poolnet", downsample=d, head=h, **conv) for m, (d, h) in CNNS.items()}}
  tuned = (tuning.learning_rates(workdir, config.train, nets, ds, config.lr_grid, config.train.progress,
                                 config.tuning_seeds, config.seed_base)
           if config.lr_grid else {})
  rated = {m: tuning.with_rate(config.train, tuned[m]["chosen"]) if tuned else config.train for m in nets}
  arms = [(m, net, rated[m]) for m, net in nets.items()]
  if config.augment_arm:  # at the rate chosen for the same net trained on centred digits
    arms += [(f"{m}+aug", nets[m], ml_collections.ConfigDict({**rated[m].to_dict(), "augment": config.augment_arm}))
             for m in AUGMENTED]
  trials = [sweep.Trial(f"{m}_s{seed}", net, ds, seed, train_config, {"model": m},
                        after_fit=functools.partial(shift_scores, config, seed=seed))
            for seed in _seeds(config) for m, net, train_config in arms]
  records = sweep.run_trials(workdir, trials, progress=config.train.progress)
  by_model = lambda metric: {m: v for (m,), v in sweep.group(records, ("model",), metric).items()}
  acc = {s: by_model(f"acc_shift{s}") for s in range(config.max_shift + 1)}
  return {"dataset": ds.name, "n_test": len(ds.y_test), "exact_tol": config.exact_tol,
          "augment_arm": config.augment_arm, "learning_rates": tuned,
          "equivariance": {" / ".join(map(str, k)): v for k, v in err.items()},
          "accuracy_vs_shift": {f"{m}@{s}": acc[s][m] for m, _, _ in arms for s in acc},
          **{m: by_model(m) for m in ("kept", "kept_se", "consistency", "train_accuracy")},
          "params": {r["model"]: r["params"] for r in records}, "records": records, "probe": probe}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Measures, writes results.json, results.md and the figures to `workdir`; returns the measurements."""
  results = measure(config, workdir)
  results["smoke_test"] = config.smoke_test
  _plot(workdir, results)
  return reporting.publish(workdir, results, render(results, config))


def _rates_line(results: dict) -> str:
  """Each net's learning rate and its validation accuracy per rate tried."""
  return rates.sentence({MODEL_LABELS[m]: e for m, e in (results.get("learning_rates") or {}).items()},
                        "net (its augmented twin uses the same)")


def _shifts(results: dict) -> list[int]:
  return sorted({int(k.split("@")[1]) for k in results["accuracy_vs_shift"]})


def _label(results: dict, model: str) -> str:
  """A model's label; "<net>+aug" is <net> trained with the augmentation arm."""
  net, augmented = model.removesuffix("+aug"), model.endswith("+aug")
  return MODEL_LABELS[net] + (f", trained with {results['augment_arm']}" if augmented else "")


def _augmented(results: dict) -> list[str]:
  """The nets of AUGMENTED that this run also trained with the augmentation arm."""
  return [m for m in AUGMENTED if f"{m}+aug" in results["kept"]]


def _accuracy(results: dict, model: str, s: int) -> list[float]:
  return results["accuracy_vs_shift"][f"{model}@{s}"]


def _acc_effect(v: dict, a: str, b: str, n_test: int) -> stats.Effect:
  """Accuracy (or agreement) a minus b, paired by seed, with the test set's sampling error."""
  return stats.with_test_set_error(stats.paired(v[a], v[b]), [np.mean(v[a]), np.mean(v[b])], n_test)


def render(results: dict, config: ml_collections.ConfigDict) -> str:
  """results.md: the equivariance table, accuracy vs shift, pooled minus control per shift, the verdicts."""
  err, depths, shifts = results["equivariance"], range(1, config.probe_depth + 1), _shifts(results)
  eq_rows = [[k, "circular" if p == "CIRCULAR" else "zero", i]
             + [f"{np.mean(err[f'{k} / {p} / {i} / {d} / {s}']):.2g}" for s in ("1 px", "stride") for d in depths]
             for k in config.probe_stacks for p in ("CIRCULAR", "SAME") for i in ("digits", "noise")]
  pct = lambda v: reporting.fmt_mean_std(v, 100)
  pairs = [(a, b) for a, b in CONTROLS.items() if b in results["kept"]]
  ci = lambda e: "{:+.1f} [{:+.1f}, {:+.1f}]".format(*(100 * v for v in (e.estimate, *e.interval())))
  return "".join([
      f"# Translation: equivariance, invariance and where they break (`{results['dataset']}`)\n\n",
      f"{config.seeds} seeds from seed {config.seed_base}; {config.train.steps} Adam steps of batch "
      f"{config.train.batch_size} ({config.train.schedule} schedule"
      + (f", the first {config.train.warmup_steps} warming up" if config.train.warmup_steps else "")
      + f") on centred digits; {results['n_test']} test digits. Accuracies in %, mean ± std "
      "over seeds; intervals are 95 % CIs, paired by seed, with the test set's sampling error. "
      f"{_rates_line(results)}\n\n",
      "## 1. Equivariance error of random-init conv stacks\n\n",
      "‖f(shift(x)) − shift(f(x))‖ / ‖f(x)‖ after each conv layer (mean over seeds), for a 1 px shift and one by the "
      "layer's total stride (else the better of the two nearest integer output shifts).\n\n",
      reporting.markdown_table(["stack", "padding", "input"] + [f"1 px, layer {d}" for d in depths]
                               + [f"stride, layer {d}" for d in depths], eq_rows),
      "\n## 2. Accuracy vs test-time translation (trained on centred digits unless a row says otherwise)\n\n",
      reporting.markdown_table(
          ["model", "params", "train"] + [f"shift {s}" for s in shifts] + ["kept (pts)", "consistency"],
          [[_label(results, m), results["params"][m], pct(results["train_accuracy"][m])]
           + [pct(_accuracy(results, m, s)) for s in shifts]
           + [reporting.fmt_mean_std(results["kept"][m], 100), pct(results["consistency"][m])]
           for m in results["kept"]]),
      f"\nShift s: mean accuracy over the 4 axis-aligned s px translations (zero fill). Kept: mean over shifts "
      f"1..{config.max_shift} minus shift 0. Consistency (Zhang 2019): % of test digits predicted alike under two "
      f"random translations in [-{config.consistency_shift}, {config.consistency_shift}]².\n\n",
      "## 3. Pooled CNN minus its stride-2 control, test accuracy per shift (pts)\n\n",
      reporting.markdown_table(["head"] + [f"shift {s}" for s in shifts],
                               [[_HEAD[CNNS[a][1]]] + [ci(_acc_effect({m: _accuracy(results, m, s) for m in (a, b)},
                                                                      a, b, results["n_test"])) for s in shifts]
                                for a, b in pairs]),
      f"\nEach pool and each stride-2 conv subsamples by 2: after {len(config.features)} stages a shift by "
      f"{2 ** len(config.features)} px moves the feature map by one position; smaller shifts fall between.\n\n",
      _augmentation_section(results, ci),
      tables.verdicts_section(CLAIMS, results),
      "\n![accuracy vs shift](accuracy_vs_shift.png)\n"])


def _augmentation_section(results: dict, ci) -> str:
  """Section 4: accuracy kept under shifts, the same nets trained on centred vs randomly translated digits."""
  nets = _augmented(results)
  if not nets:
    return ""
  aug, kept = results["augment_arm"], results["kept"]
  rows = [[MODEL_LABELS[m], reporting.fmt_mean_std(kept[m], 100), reporting.fmt_mean_std(kept[f"{m}+aug"], 100),
           ci(_kept(results, f"{m}+aug", m))] for m in nets]
  return "".join([
      f"## 4. Trained on centred vs randomly translated digits (`{aug}`; beside the claims, not judged)\n\n",
      reporting.markdown_table(["net", "kept, centred training (pts)", f"kept, trained with {aug} (pts)",
                                "augmented minus centred (pts)"], rows),
      "\nKept: as in section 2. How much of the accuracy lost under shifts is the training distribution rather "
      "than the architecture (Azulay & Weiss 2019). The claims above are about nets trained on centred digits.\n\n"])


def _plot(workdir: str, results: dict) -> None:
  fig, ax, shifts = *reporting.new_figure(figsize=(6, 4)), _shifts(results)
  figures.errorbar_curves(ax, shifts, {_label(results, m): [_accuracy(results, m, s) for s in shifts]
                                       for m in results["kept"]}, scale=100, logx=False,
                          xlabel="test-time translation (px)", ylabel="test accuracy (%)")
  reporting.save_figure(fig, workdir, "accuracy_vs_shift")


def _judge_equivariance(results: dict) -> ledger.Finding:
  err = results["equivariance"]
  exact = [float(np.mean(v)) < results["exact_tol"] for v in err.values()]  # below float rounding: exact
  stacks = dict.fromkeys(k.split(" / ")[0] for k in err)  # probe stacks present, in order
  means = {st: float(np.mean([np.mean(v) for k, v in err.items() if k.startswith(f"{st} / CIRCULAR")]))
           for st in stacks}
  return ledger.Finding("relative error of circular-padded random conv stacks: " + ", ".join(
      f"{st} {e:.1e}" if e < 1e-3 else f"{st} {e:.2f}" for st, e in means.items()) + " (exact only without "
      "subsampling)", verdicts.from_counts(*verdicts.count_true(exact)))


def _kept(results: dict, a: str, b: str | None = None) -> stats.Effect:
  """Accuracy kept under shifts by `a` (minus `b`'s, paired by seed), with the test set's sampling error."""
  # Kept accuracy is a per-digit difference: its test-set error is the standard error over digits measured with it
  # (the seeds share one test set: their mean's is the mean); two nets' are added as if independent.
  kept, se = results["kept"], results["kept_se"]
  e = stats.paired(kept[a], kept[b] if b else np.zeros(len(kept[a])))
  return stats.with_fixed_variance(e, sum(np.mean(se[m]) ** 2 for m in (a, b) if m))


# A point of accuracy: a smaller gain is within what retuning the learning rate moves, not "makes it invariant".
_RULE_POOLING = stats.Rule("accuracy kept under 1-k px shifts (shifted minus centred test accuracy, fraction), "
                           "max-pool CNN minus the same CNN with stride-2 convs in place of its pools (equal "
                           "parameters), paired by seed, flatten and GAP heads, with the test set's sampling error",
                           "greater", 0.01)
# "Wherever it appears": moving the digit may cost at most 2 points, a loss no reader would call failing to recognise.
_RULE_ANYWHERE = stats.Rule("accuracy kept under 1-k px shifts (fraction) by the nets built to be invariant, "
                            "GAP-head CNNs with max and max-blur pooling, with the test set's sampling error",
                            "equivalent", 0.02)
# A point of agreement, the accuracy claims' least effect: "more consistent" must show in 1 prediction in 100.
_RULE_BLURPOOL = stats.Rule("shift consistency (fraction), max-blur minus max pooling (GAP heads), paired by seed, "
                            "with the test set's sampling error", "greater", 0.01)


def _judge_pooling_invariance(results: dict) -> ledger.Finding:
  pairs = [(a, b) for a, b in CONTROLS.items() if b in results["kept"]]
  verdict, figure = stats.judge(_RULE_POOLING, [(f"{_HEAD[CNNS[a][1]]} head", _kept(results, a, b))
                                                for a, b in pairs], scale=100, unit=" pts")
  kept = ", ".join(f"{m} {100 * np.mean(results['kept'][m]):+.1f}" for a, b in pairs for m in (a, b))
  return ledger.Finding(f"accuracy kept under shifts (pts): {kept}; pooled minus stride-2 control: {figure}", verdict)


def _judge_anywhere(results: dict) -> ledger.Finding:
  verdict, figure = stats.judge(_RULE_ANYWHERE, [(MODEL_LABELS[m], _kept(results, m)) for m in GAP_NETS],
                                scale=100, unit=" pts")
  context = "".join(f"; not judged: trained with {results['augment_arm']}, the {MODEL_LABELS[m]} keeps "
                    f"{100 * np.mean(results['kept'][f'{m}+aug']):+.1f} pts" for m in _augmented(results)
                    if m in GAP_NETS)
  return ledger.Finding(f"accuracy kept under 1-{_shifts(results)[-1]} px shifts: {figure}{context}", verdict)


def _judge_blurpool(results: dict) -> ledger.Finding:
  c = results["consistency"]
  e = _acc_effect(c, "cnn_gap_blur", "cnn_gap", results["n_test"])
  verdict, figure = stats.judge(_RULE_BLURPOOL, [("max-blur minus max", e)], scale=100, unit=" pts")
  return ledger.Finding(f"shift consistency {reporting.fmt_mean_std(c['cnn_gap'], 100)} % (max pool) vs "
                        f"{reporting.fmt_mean_std(c['cnn_gap_blur'], 100)} % (max-blur pool); {figure}", verdict)


CLAIMS = [
    ledger.Claim("translation_equivariance", "Convolution is translation-equivariant: shifting the input shifts the "
                 "feature map.", "Goodfellow et al. 2016, ch. 9.2; Wikipedia, 'Convolutional neural network'",
                 "relative error |f(shift x) - shift f(x)| / |f(x)| of random conv stacks (depth 1-3; stride 1, "
                 "stride 2, pooling; circular and zero padding); a case holds below float rounding (1e-4)",
                 _judge_equivariance),
    ledger.Claim("pooling_invariance", "Pooling makes a CNN's prediction invariant to small translations.",
                 "Goodfellow et al. 2016, ch. 9.3; CNN explainers", "test accuracy kept under 1-4 px shifts by "
                 "max-pool CNNs trained on centred digits vs equal-parameter controls without pools",
                 _judge_pooling_invariance, rule=_RULE_POOLING),
    ledger.Claim("recognise_anywhere", "A CNN recognises a pattern wherever it appears in the image.",
                 "CNN explainers", "test accuracy kept under 1-4 px shifts by GAP-head CNNs trained on centred "
                 "digits; supported if equivalent to no loss (TOST)", _judge_anywhere, rule=_RULE_ANYWHERE),
    ledger.Claim("blurpool_consistency", "Anti-aliasing before subsampling (BlurPool) makes CNNs more shift-"
                 "consistent.", "Zhang 2019", "how often the predicted class agrees between two random shifts, "
                 "max-blur vs max pooling", _judge_blurpool, rule=_RULE_BLURPOOL),
]
