"""Weight sharing reduces overfitting: the train/test gap vs training-set size and parameter count.

Reuses weight_sharing's three models — CNN (local + shared), locally-connected net (local, unshared;
same shapes) and MLP — on real digits: (a) at their base widths across training-set sizes, with
learning curves; (b) at one training-set size across width multipliers, which changes the parameter
count of each family by ~16x (10 seeds: 150 trainings; the models of one seed share its data subset and
batch order). Each family trains at its own Adam rate, chosen on a validation split of the training set,
with a cosine decay long enough for the base-width nets to fit their training sets. Measures per-seed train
and test accuracy and the generalisation gap = train accuracy − test accuracy after training. The CLAIMS
judge compares the CNN's gap with the LCN's (same locality and shapes: it isolates sharing) per
training-set size, paired by seed, with the test set's sampling error, Holm-corrected, against a declared
margin; it issues no verdict unless every model it compares fits its training set.

Command:  python run.py --exp=overfitting
Result:   see REPORT.md (ledger) and the run's results.md.
"""

import os

import ml_collections
import numpy as np

import experiments
from cnnlab import data
from cnnlab.errors import UserError
from cnnlab.report import figures, ledger, rates, rendering as reporting, stats, tables
from cnnlab.training import inference, metric_writer, sweep, train, tuning
from experiments import weight_sharing

LABELS = weight_sharing.MODEL_LABELS


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = experiments.new_config(quick)
  c.data = data.get_config()
  c.data.name = "digits"           # 1,437 train / 360 test real 8x8 digits (mnist5k also works, ~5x slower)
  c.train = train.get_config()
  c.train.steps = 1500             # with the cosine decay, long enough for the base-width nets to fit their data
  c.train.schedule = "cosine"
  c.train.batch_size = 64
  c.train.learning_rate = 1e-3     # used when lr_grid is empty
  c.train.log_every = 100
  c.train.eval_every = 100         # test accuracy every 100 steps: the learning curves
  c.train.checkpoint_every = 1500
  # Adam rates tried per family (base width) on a validation split of the full training set
  # (cnnlab.training.tuning); every width and size of a family then trains at its rate. (): train.learning_rate.
  c.lr_grid = (1e-3, 3e-3, 1e-2, 3e-2)
  c.tuning_seeds = 3               # tuning trainings per (model, rate), seeds seed_base..: tuning.choose
  c.features = (8, 16)             # base conv channels (CNN and LCN), as in weight_sharing
  c.kernel_size = 3
  c.mlp_hidden = (256, 256)        # base MLP widths, as in weight_sharing
  c.train_fractions = (0.1, 0.3, 1.0)  # stratified fractions of the training set, at base width
  c.width_multipliers = (0.25, 1.0, 4.0)  # widths scaled by these at `width_fraction` (parameter-count axis)
  c.width_fraction = 0.3           # training fraction of the width sweep
  c.seeds = 10                     # seeds per cell
  # First seed: this run uses seeds seed_base .. seed_base + seeds - 1 (another base draws a disjoint set).
  c.seed_base = 0
  if quick:
    c.tuning_seeds = 1
    c.train.steps = 20
    c.train.batch_size = 32
    c.train.log_every = 10
    c.train.eval_every = 10
    c.train.checkpoint_every = 20
    c.train.eval_batch_size = 200
    c.train.tensorboard = False
    c.features = (4, 8)
    c.mlp_hidden = (32, 32)
    c.train_fractions = (0.3, 1.0)
    c.width_multipliers = (1.0,)   # the width axis adds compiles; its code path is the same as the size axis
    c.seeds = 2
    c.lr_grid = ()
  return c


def validate_config(config: ml_collections.ConfigDict) -> None:
  """One-line errors for impossible settings, before anything is written."""
  if config.seed_base < 0:
    raise UserError(f"overfitting: seed_base must be >= 0, got {config.seed_base}")
  if config.lr_grid:
    tuning.check_grid(config.lr_grid, config.tuning_seeds)


def _nets(config, multiplier: float, num_classes: int) -> dict:
  scaled = ml_collections.ConfigDict(config.to_dict())
  scaled.features = tuple(max(1, round(multiplier * f)) for f in config.features)
  scaled.mlp_hidden = tuple(max(1, round(multiplier * h)) for h in config.mlp_hidden)
  return weight_sharing.build_models(scaled, num_classes)


def _key(model: str, width: float, fraction: float) -> str:
  return f"{model}@w{width}@f{fraction}"


def measure(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Per-seed train / test accuracy and gap of every (model, width, fraction) cell, parameter counts."""
  ds = data.load(config.data)
  tuned = (tuning.learning_rates(workdir, config.train, _nets(config, 1.0, ds.num_classes), ds, config.lr_grid,
                                 config.train.progress, config.tuning_seeds, config.seed_base)
           if config.lr_grid else {})
  train_config = {name: tuning.with_rate(config.train, tuned[name]["chosen"]) if tuned else config.train
                  for name in LABELS}
  trials = {}
  # Size axis at base width; width axis at one size. A shared cell (base width, width_fraction) has one name
  # in both, so it is trained once (the second lookup is a finished run).
  for mult in config.width_multipliers:
    nets = _nets(config, mult, ds.num_classes)
    for f in sorted(set(config.train_fractions) | {config.width_fraction}):
      if not (mult == 1.0 and f in config.train_fractions) and f != config.width_fraction:
        continue
      for seed in range(config.seed_base, config.seed_base + config.seeds):
        sub = data.subsample(ds, f, seed)
        for name, net in nets.items():
          key = f"{name}_w{mult}_f{f}_s{seed}"
          trials[key] = sweep.Trial(key, net, sub, seed, train_config[name],
                                    {"model": name, "width": mult, "fraction": f, "n_train": len(sub.y_train)},
                                    after_fit=inference.test_correct)
  records = sweep.run_trials(workdir, list(trials.values()), progress=config.train.progress)
  for r in records:
    r["gap"] = r["train_accuracy"] - r["test_accuracy"]
  cells = lambda metric: {_key(*k): v for k, v in sweep.group(records, ("model", "width", "fraction"), metric).items()}
  params = {(r["model"], r["width"]): r["params"] for r in records}
  gap = cells("gap")
  # Across families at equal data: does the gap follow the parameter count? (rank correlation of means)
  wf, grid = config.width_fraction, [(m, w) for m in LABELS for w in config.width_multipliers]
  rank = lambda v: np.argsort(np.argsort(v))
  rho = float(np.corrcoef(rank([params[c] for c in grid]), rank([np.mean(gap[_key(*c, wf)]) for c in grid]))[0, 1])
  return {"dataset": ds.name, "n_test": len(ds.y_test), "train_fractions": list(config.train_fractions),
          "width_multipliers": list(config.width_multipliers), "width_fraction": wf, "gap": gap,
          "test_accuracy": cells("test_accuracy"), "train_accuracy": cells("train_accuracy"),
          "test_correct": cells("test_correct"),
          "params": {f"{m}@w{w}": p for (m, w), p in params.items()},
          "n_train": {str(r["fraction"]): r["n_train"] for r in records}, "rank_corr_params_gap": rho,
          "learning_rates": tuned, "records": records}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Measures, writes results.json, results.md and the figures to `workdir`; returns the measurements."""
  results = measure(config, workdir)
  results["smoke_test"] = config.smoke_test
  _plot(workdir, results)
  return reporting.publish(workdir, results, render(results, config))


def _gap_effect(results: dict, cell_a: tuple, cell_b: tuple) -> stats.Effect:
  """Gap of (model, width, fraction) `cell_a` minus `cell_b`, paired by seed; the test set's sampling error of the
  test-accuracy difference by McNemar's paired variance (the training sets are the seeds' own: no extra term)."""
  gap, correct = results["gap"], results["test_correct"]
  ka, kb = _key(*cell_a), _key(*cell_b)
  outcomes = [[stats.unpack_correct(c) for c in correct[k]] for k in (ka, kb)]
  return stats.with_fixed_variance(stats.paired(gap[ka], gap[kb]), stats.paired_test_set_variance(*outcomes))


def _context(results: dict) -> list[tuple[str, stats.Effect]]:
  """Paired gap differences shown beside the verdict: the MLP, more data, more width (no claim of their own)."""
  fr, widths, wf, n = (results[k] for k in ("train_fractions", "width_multipliers", "width_fraction", "n_train"))
  rows = [(f"MLP − CNN gap, {n[str(f)]:,} ex.", _gap_effect(results, ("mlp", 1.0, f), ("cnn", 1.0, f))) for f in fr]
  if len(fr) > 1:
    rows += [(f"{LABELS[m]}: gap at {n[str(fr[0])]:,} − at {n[str(fr[-1])]:,} ex.",
              _gap_effect(results, (m, 1.0, fr[0]), (m, 1.0, fr[-1]))) for m in LABELS]
  if len(widths) > 1:
    rows += [(f"{LABELS[m]}: gap at {widths[-1]:g}x − at {widths[0]:g}x width",
              _gap_effect(results, (m, widths[-1], wf), (m, widths[0], wf))) for m in LABELS]
  return rows


def render(results: dict, config: ml_collections.ConfigDict) -> str:
  """results.md: train / test / gap over sizes and widths, the paired gap differences and the verdict of CLAIMS."""
  fr, wf, widths, n_train = (results[k] for k in ("train_fractions", "width_fraction", "width_multipliers", "n_train"))
  tr, test, gap, params = (results[k] for k in ("train_accuracy", "test_accuracy", "gap", "params"))
  fmt = lambda v: reporting.fmt_mean_std(v, 100)
  cell = lambda m, f: (f"{np.mean(tr[_key(m, 1.0, f)]) * 100:.1f} / {fmt(test[_key(m, 1.0, f)])} / "
                       f"{fmt(gap[_key(m, 1.0, f)])}")
  effects = _judged(results) + _context(results)
  return "".join([
      f"# Overfitting: generalisation gap vs data and parameters (`{results['dataset']}`)\n\n",
      f"{config.seeds} seeds (from seed {config.seed_base}), {config.train.steps} Adam steps of batch "
      f"{config.train.batch_size} ({config.train.schedule} schedule); test set {results['n_test']}. Accuracy and "
      "gap (train − test) in percentage points, mean ± std. "
      f"{rates.sentence({LABELS[m].split()[0]: e for m, e in results['learning_rates'].items()}, 'model')}\n\n",
      "## Gap vs training-set size (base widths)\n\n",
      reporting.markdown_table(["model", "params"] + [f"{n_train[str(f)]:,} ex.: train / test / gap" for f in fr],
                               [[LABELS[m], params[f"{m}@w1.0"]] + [cell(m, f) for f in fr] for m in LABELS]),
      f"\n## Gap vs parameter count ({n_train[str(wf)]:,} training examples)\n\n",
      tables.mean_std_table({(m, w): LABELS[m] for m in LABELS for w in widths},
                            {"train": "train", "test_accuracy": "test", "gap": "gap"},
                            lambda mw, k: results["train_accuracy" if k == "train" else k][_key(*mw, wf)], scale=100,
                            extra={"width x": lambda mw: mw[1], "params": lambda mw: params[f"{mw[0]}@w{mw[1]}"]}),
      "\n## Paired gap differences\n\nPer seed, in points; the 95 % interval includes the test set's sampling "
      "error. The first rows are the judged ones (LCN − CNN); the rest are context.\n\n",
      reporting.markdown_table(["comparison", "estimate", "95 % CI"],
                               [[label, f"{100 * e.estimate:+.1f}", "[{:+.1f}, {:+.1f}]".format(
                                   *(100 * v for v in e.interval()))] for label, e in effects]),
      f"\nRank correlation of parameter count and mean gap over all {len(LABELS) * len(widths)} (model, width) "
      f"cells: {results['rank_corr_params_gap']:.2f}.\n\n",
      tables.verdicts_section(CLAIMS, results),
      "\n![gap](gap.png)\n\n![learning curves](learning_curves.png)\n"])


def _plot(workdir: str, results: dict) -> None:
  fr, wf, widths, n_train = (results[k] for k in ("train_fractions", "width_fraction", "width_multipliers", "n_train"))
  gap, params = results["gap"], results["params"]
  fig, (ax, bx) = reporting.new_figure(1, 2, figsize=(10, 4))
  ylabel = "train − test accuracy (pp)"
  # Population std (ddof=0) in these error bars, as this plot has always drawn them; the tables use ddof=1.
  figures.errorbar_curves(ax, [n_train[str(f)] for f in fr], {LABELS[m]: [gap[_key(m, 1.0, f)] for f in fr]
                                                              for m in LABELS}, scale=100, ddof=0,
                          xlabel="training examples", ylabel=ylabel)
  for m in LABELS:  # one line per family, at its own parameter counts
    figures.errorbar_curves(bx, [params[f"{m}@w{w}"] for w in widths],
                            {LABELS[m]: [gap[_key(m, w, wf)] for w in widths]}, scale=100, ddof=0,
                            xlabel=f"parameters ({n_train[str(wf)]:,} examples)", ylabel=ylabel)
  reporting.save_figure(fig, workdir, "gap")
  # Learning curves at the smallest size, base width, the run's first seed: batch train accuracy vs test accuracy.
  seed = min(r["seed"] for r in results["records"])
  fig, axes = reporting.new_figure(1, len(LABELS), figsize=(4 * len(LABELS), 3.5), sharey=True)
  for a, m in zip(np.atleast_1d(axes), LABELS):
    rows = metric_writer.read_metrics(os.path.join(workdir, "trials", f"{m}_w1.0_f{fr[0]}_s{seed}"))
    tr_rows = [r for r in rows if "train_accuracy" in r]
    te_rows = [r for r in rows if "test_accuracy" in r]
    a.plot([r["step"] for r in tr_rows], [100 * r["train_accuracy"] for r in tr_rows], label="train (batches)")
    a.plot([r["step"] for r in te_rows], [100 * r["test_accuracy"] for r in te_rows], label="test")
    a.set_title(f"{LABELS[m]}, {n_train[str(fr[0])]} ex.", fontsize=9)
    a.set_xlabel("step")
    a.grid(alpha=0.3)
  np.atleast_1d(axes)[0].set_ylabel("accuracy (%)")
  np.atleast_1d(axes)[0].legend(fontsize=8)
  reporting.save_figure(fig, workdir, "learning_curves")


def _judged(results: dict) -> list[tuple[str, stats.Effect]]:
  """LCN gap minus CNN gap at each training-set size (base widths): what sharing does to overfitting."""
  n = results["n_train"]
  return [(f"LCN − CNN gap, {n[str(f)]:,} ex.", _gap_effect(results, ("lcn", 1.0, f), ("cnn", 1.0, f)))
          for f in results["train_fractions"]]


def _judge_overfitting(results: dict) -> ledger.Finding:
  fr, n, tr = results["train_fractions"], results["n_train"], results["train_accuracy"]
  gaps = {m: "/".join(f"{100 * np.mean(results['gap'][_key(m, 1.0, f)]):.1f}" for f in fr) for m in LABELS}
  # A gap measures overfitting only once both nets fit their training set; below that it measures the step budget.
  fit = [min(np.mean(tr[_key(m, 1.0, f)]) for m in ("cnn", "lcn")) for f in fr]
  judged = [c for c, ok in zip(_judged(results), fit) if ok >= _FITS]
  each = stats.decide([e for _, e in judged], _RULE)[1] if judged else []
  figure = stats.judge(_RULE, judged, scale=100, unit=" pts")[1] if judged else "no size judged"
  unfit = [f"{n[str(f)]:,} ex. not judged (train accuracy {100 * a:.1f} % < {100 * _FITS:g} %)"
           for f, a in zip(fr, fit) if a < _FITS]
  return ledger.Finding(f"train − test gap (points) at {'/'.join(str(n[str(f)]) for f in fr)} examples: "
                        f"CNN {gaps['cnn']}, LCN {gaps['lcn']}, MLP {gaps['mlp']}; lowest train accuracy of the "
                        f"CNN and LCN {100 * min(fit):.1f} %; " + "; ".join([figure, *unfit]),
                        stats.combine(each + [stats.INCONCLUSIVE] * len(unfit)))


_FITS = 0.99  # train accuracy (fraction) both nets must reach at a size for its gap comparison to be judged
# "Reduces overfitting" names no size: a gap narrower by under 1 point of accuracy is no practical reduction, so an
# interval wholly below 1 point refutes the claim at that size (an equivalence margin, not "not significant").
_RULE = stats.Rule("generalisation gap (train − test accuracy, fraction), LCN minus CNN, paired by seed, per "
                   "training-set size at base widths, with the test set's sampling error", "greater", 0.01)

CLAIMS = [
    ledger.Claim("cnns_reduce_overfitting", "CNNs are regularised MLPs: weight sharing reduces overfitting.",
                 "Wikipedia, 'Convolutional neural network'", "generalisation gap (train − test accuracy) of the LCN "
                 "minus the CNN (same locality and shapes: the difference isolates sharing) at each training-set "
                 "size, 10 seeds; a size is judged only if both nets reach 99 % train accuracy there; the MLP and "
                 "the width sweep are context", _judge_overfitting, rule=_RULE),
]
