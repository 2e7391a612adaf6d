"""Weight sharing makes conv layers far more parameter-efficient than dense ones, and is what makes CNNs learn images well.

Ablation separating the two ingredients of a conv layer: CNN (local + shared) vs locally-connected
net (LCN: local, not shared; same architecture, `nn.ConvLocal`) vs MLP (neither), trained on 10%,
30% and 100% of the training set, 10 seeds each (90 trainings; the three models of one seed share its
data subset and batch order, so they are compared pairwise by seed). Each model trains at its own learning rate,
chosen on a validation split of the training set, for the same number of epochs at every size with a cosine
schedule: long enough that its train loss is flat (results.md shows it). Measures parameter counts, per-seed
train / test accuracy and train-loss curves; the CLAIMS judges turn them into verdicts: paired differences with 95 %
confidence intervals that include the test set's sampling error, Holm-corrected across training-set sizes.

Command:  python run.py --exp=weight_sharing          (mnist5k: 4,000 train / 1,000 test real MNIST digits)
          python run.py --exp=weight_sharing --config.data.name=digits
Result:   see REPORT.md (ledger) and the run's results.md.
"""

import ml_collections
import numpy as np

import experiments
from cnnlab import data, models
from cnnlab.ops import analysis
from cnnlab.report import curves, figures, ledger, rates, rendering as reporting, stats, tables, verdicts
from cnnlab.training import inference, sweep, train, tuning
from cnnlab.errors import UserError

MODEL_LABELS = {"cnn": "CNN (local + shared)", "lcn": "LCN (local, unshared)", "mlp": "MLP (dense)"}


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = experiments.new_config(quick)
  c.data = data.get_config()
  c.train = train.get_config()
  c.train.steps = 1875             # the full training set's budget: 30 epochs of 4,000 digits (see min_steps)
  c.train.batch_size = 64
  c.train.learning_rate = 1e-3     # every model's when lr_grid is empty
  c.train.schedule = "cosine"      # decays to 0 at the budget's end: train loss flattens (results.md's curves)
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  # A training fraction f trains max(min_steps, f * train.steps) steps, never more than train.steps: the same
  # epochs at every size, and enough steps for the smallest subsets to fit.
  c.min_steps = 300
  c.features = (8, 16)             # conv channels per stage of both CNN and LCN (each: conv, ReLU, 2x2 max pool)
  c.kernel_size = 3                # conv / locally-connected window
  c.mlp_hidden = (256, 256)        # MLP hidden widths (same depth as the conv stack)
  c.train_fractions = (0.1, 0.3, 1.0)  # stratified fractions of the training set
  c.seeds = 10                     # seeds per (model, fraction); init, batch order and subset all depend on it
  # First seed: this run uses seeds seed_base .. seed_base + seeds - 1 (another base draws a disjoint set).
  c.seed_base = 0
  c.factor = 10.0                  # "far more parameter-efficient": at least this many times fewer parameters
  # Adam rates tried per model on a validation split of the full training set (cnnlab.training.tuning); each
  # model then trains at its own best rate at every size. (): every model at train.learning_rate.
  c.lr_grid = (1e-3, 3e-3, 1e-2)
  c.tuning_seeds = 3               # tuning trainings per (model, rate), seeds seed_base..: tuning.choose
  if quick:
    c.data.name = "digits"
    c.train.steps = 20
    c.min_steps = 20
    c.train.batch_size = 32
    c.train.log_every = 10
    c.train.checkpoint_every = 10
    c.train.eval_batch_size = 200
    c.train_fractions = (0.3, 1.0)
    c.seeds = 2
    c.features = (4, 8)
    c.mlp_hidden = (32, 32)
    c.lr_grid = (1e-3, 3e-3)
    c.tuning_seeds = 1
  return c


def build_models(config: ml_collections.ConfigDict, num_classes: int) -> dict:
  conv = dict(features=tuple(config.features), kernel_size=config.kernel_size, num_classes=num_classes)
  return {"cnn": models.create("cnn", **conv), "lcn": models.create("lcn", **conv),
          "mlp": models.create("mlp", hidden=tuple(config.mlp_hidden), num_classes=num_classes)}


def validate_config(config: ml_collections.ConfigDict) -> None:
  """One-line errors for impossible settings, before anything is written."""
  if config.seed_base < 0:
    raise UserError(f"weight_sharing: seed_base must be >= 0, got {config.seed_base}")
  if config.seeds < 1 or not config.train_fractions or not config.features or config.kernel_size < 1:
    raise UserError("weight_sharing needs seeds >= 1, at least one train fraction and conv stage, kernel_size >= 1")
  if config.min_steps < 1:
    raise UserError(f"weight_sharing: min_steps must be >= 1, got {config.min_steps}")
  if config.lr_grid:
    tuning.check_grid(config.lr_grid, config.tuning_seeds)
  if not all(0 < f <= 1 for f in config.train_fractions):
    raise UserError(f"train_fractions must lie in (0, 1], got {tuple(config.train_fractions)}")


def measure(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Parameter counts, and per-seed train / test accuracy of every (model, training fraction)."""
  ds = data.load(config.data)
  nets = build_models(config, ds.num_classes)
  layers = {name: analysis.param_table(m, (1, *ds.example_shape)) for name, m in nets.items()}
  params = {name: sum(r["params"] for r in rows) for name, rows in layers.items()}
  # Conv layers shared vs unshared: same shapes in and out, so the ratio is the price of not sharing.
  conv_rows = [[c["layer"], c["params"], l["params"], l["params"] / c["params"]]
               for c, l in zip(layers["cnn"], layers["lcn"]) if c["layer"].startswith("conv")]
  tuned = (tuning.learning_rates(workdir, config.train, nets, ds, config.lr_grid, config.train.progress,
                                 config.tuning_seeds, config.seed_base)
           if config.lr_grid else {})
  trials, names = [], {}
  for fraction in config.train_fractions:
    for seed in range(config.seed_base, config.seed_base + config.seeds):
      subset = data.subsample(ds, fraction, seed)
      for name, net in nets.items():
        trial_config = _budget(config, fraction, tuned[name]["chosen"] if tuned else config.train.learning_rate)
        trials.append(sweep.Trial(f"{name}_f{fraction}_s{seed}", net, subset, seed, trial_config,
                                  {"model": name, "fraction": fraction, "n_train": len(subset.y_train),
                                   "steps": trial_config.steps}, after_fit=inference.test_correct))
        names.setdefault(f"{name}@{fraction}", []).append(trials[-1].name)
  records = sweep.run_trials(workdir, trials, progress=config.train.progress)
  test = sweep.group(records, ("model", "fraction"), "test_accuracy")
  train_acc = sweep.group(records, ("model", "fraction"), "train_accuracy")
  correct = sweep.group(records, ("model", "fraction"), "test_correct")
  return {"dataset": ds.name, "n_test": len(ds.y_test), "factor": config.factor, "params": params,
          "conv_layers": conv_rows, "test_accuracy": {f"{m}@{f}": v for (m, f), v in test.items()},
          "train_accuracy": {f"{m}@{f}": v for (m, f), v in train_acc.items()},
          "test_correct": {f"{m}@{f}": v for (m, f), v in correct.items()},
          "n_train": {str(r["fraction"]): r["n_train"] for r in records},
          "steps": {str(r["fraction"]): r["steps"] for r in records}, "learning_rates": tuned,
          "train_loss_curves": curves.train_loss(workdir, names), "records": records}


def _budget(config: ml_collections.ConfigDict, fraction: float, rate: float) -> ml_collections.ConfigDict:
  """The training config of one cell: `rate`, and the fraction's share of the steps (see `min_steps`)."""
  trial_config = tuning.with_rate(config.train, rate)
  trial_config.steps = min(config.train.steps, max(config.min_steps, round(fraction * config.train.steps)))
  trial_config.checkpoint_every = min(trial_config.checkpoint_every, trial_config.steps)
  return trial_config


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Measures, writes results.json, results.md and the figure to `workdir`; returns the measurements."""
  results = measure(config, workdir)
  results["smoke_test"] = config.smoke_test
  _plot(workdir, results)
  return reporting.publish(workdir, results, render(results, config))


def render(results: dict, config: ml_collections.ConfigDict) -> str:
  """results.md: parameter table, train and test accuracy side by side, the paired effects and the verdicts."""
  params, fr = results["params"], list(results["n_train"])
  train_acc, test_acc = results["train_accuracy"], results["test_accuracy"]
  cell = lambda m, f: (f"{100 * np.mean(train_acc[f'{m}@{f}']):.1f} / "
                       f"{reporting.fmt_mean_std(test_acc[f'{m}@{f}'], 100)}")
  effects = [(f"{a.upper()} − {b.upper()}", label, e) for a, b in (("cnn", "lcn"), ("lcn", "mlp"), ("cnn", "mlp"))
             for label, e in _effects(results, a, b)]
  return "".join([
      f"# Weight sharing: CNN vs locally-connected net vs MLP on `{results['dataset']}`\n",
      f"{config.seeds} seeds per cell (from seed {config.seed_base}); Adam, batch {config.train.batch_size}, "
      f"{config.train.schedule} schedule, {_steps_words(results)}; test set: {results['n_test']} examples. "
      f"{rates.sentence({MODEL_LABELS[m].split()[0]: e for m, e in results['learning_rates'].items()}, 'model')}\n",
      "## Parameters\n",
      reporting.markdown_table(["model", "parameters", "x CNN"],
                               [[MODEL_LABELS[m], params[m], f"{params[m] / params['cnn']:.1f}"] for m in MODEL_LABELS]),
      "\nConv layers, shared vs unshared (same input, output and receptive field):\n\n",
      reporting.markdown_table(["layer", "CNN params", "LCN params", "LCN / CNN"],
                               [[a, b, c, f"{d:.0f}x"] for a, b, c, d in results["conv_layers"]]),
      "\n## Accuracy vs training-set size\n\nTrain accuracy (mean) / test accuracy (mean ± std over seeds), in %; "
      "the generalisation gap is train minus test.\n\n",
      reporting.markdown_table(["model"] + [f"{float(f):.0%} ({results['n_train'][f]:,} ex.)" for f in fr],
                               [[MODEL_LABELS[m]] + [cell(m, f) for f in fr] for m in MODEL_LABELS]),
      "\n## Paired differences of test accuracy\n\nPer seed (same data subset and batch order), in points; the "
      "95 % interval includes the test set's sampling error. CNN − MLP is context, not a claim.\n\n",
      reporting.markdown_table(["comparison", "training set", "estimate", "95 % CI"],
                               [[c, label, *_interval(e)] for c, label, e in effects]),
      "\n## Training reached its plateau\n\nTrain loss on batches, mean ± std over seeds, late in each cell's "
      "budget (flat: more steps would not fit the training set better).\n\n",
      reporting.markdown_table(*curves.plateau_rows(results["train_loss_curves"], _cell_labels(results), "cell")),
      "\n![train loss, full training set](learning_curves.png)\n",
      "\n", tables.verdicts_section(CLAIMS, results),
      "\n![accuracy vs training-set size](accuracy_vs_size.png)\n"])


def _steps_words(results: dict) -> str:
  n, steps = results["n_train"], results["steps"]
  return "steps per training-set size: " + ", ".join(f"{steps[f]:,} at {n[f]:,} ex." for f in n)


def _cell_labels(results: dict) -> dict[str, str]:
  return {key: f"{MODEL_LABELS[key.split('@')[0]].split()[0]}, {results['n_train'][key.split('@')[1]]:,} ex."
          for key in results["train_loss_curves"]}


def _interval(e: stats.Effect) -> list[str]:
  lo, hi = e.interval()
  return [f"{100 * e.estimate:+.1f}", f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"]


def _plot(workdir: str, results: dict) -> None:
  fig, (ax, bx) = reporting.new_figure(1, 2, figsize=(10, 4))
  params, fr, acc = results["params"], list(results["n_train"]), results["test_accuracy"]
  figures.errorbar_curves(ax, [results["n_train"][f] for f in fr],
                          {f"{MODEL_LABELS[m]}, {params[m]:,} params": [acc[f"{m}@{f}"] for f in fr]
                           for m in MODEL_LABELS}, scale=100, xlabel="training examples", ylabel="test accuracy (%)")
  bx.bar([MODEL_LABELS[m].split()[0] for m in MODEL_LABELS], [params[m] for m in MODEL_LABELS],
         color=["C0", "C1", "C2"])
  bx.set_yscale("log")
  bx.set_ylabel("parameters (log)")
  reporting.save_figure(fig, workdir, "accuracy_vs_size")
  full = max(fr, key=float)
  curves.plot(workdir, "learning_curves", {m: results["train_loss_curves"][f"{m}@{full}"] for m in MODEL_LABELS},
              {m: f"{MODEL_LABELS[m]}, {results['n_train'][full]:,} ex." for m in MODEL_LABELS})


def _judge_efficiency(results: dict) -> ledger.Finding:
  p = results["params"]
  efficient = all(p["cnn"] * results["factor"] <= p[m] for m in ("lcn", "mlp"))
  return ledger.Finding(f"CNN {p['cnn']:,} params vs LCN {p['lcn']:,} ({p['lcn'] / p['cnn']:.0f}x) and MLP "
                        f"{p['mlp']:,} ({p['mlp'] / p['cnn']:.0f}x)", verdicts.from_flag(efficient))


def _effects(results: dict, a: str, b: str) -> list[tuple[str, stats.Effect]]:
  """Per training-set size: test accuracy of `a` minus `b`, paired by seed and by test example (McNemar)."""
  correct, n = results["test_correct"], results["n_train"]
  return [(f"{n[f]:,} ex.", stats.paired_accuracy(correct[f"{a}@{f}"], correct[f"{b}@{f}"])) for f in n]


def _accuracy_figure(results: dict, models_: tuple[str, ...]) -> str:
  fractions = list(results["n_train"])
  cells = [f"{m.upper()} " + "/".join(f"{100 * np.mean(results['test_accuracy'][f'{m}@{f}']):.1f}" for f in fractions)
           for m in models_]
  sizes = "/".join(f"{results['n_train'][f]:,}" for f in fractions)
  return f"test accuracy % at {sizes} examples: " + ", ".join(cells)


def _judge_pairwise(rule: stats.Rule, a: str, b: str):
  """The judge of "`a` beats `b`": `rule` over the paired test-accuracy differences at every training-set size."""
  def judge(results: dict) -> ledger.Finding:
    verdict, figure = stats.judge(rule, _effects(results, a, b), scale=100, unit=" pts")
    return ledger.Finding(f"{_accuracy_figure(results, (a, b))}; {a.upper()} − {b.upper()} by size: {figure}",
                          verdict)
  return judge


# "Beats" names no size. Half a point of test accuracy (5 of mnist5k's 1,000 test digits) is the smallest lead that
# could count as what makes a net learn images well; a smaller one is within what another step budget moves.
_MARGIN = 0.005
_RULE_CNN_LCN = stats.Rule("test accuracy (fraction), CNN minus LCN, paired by seed, per training-set size, with "
                           "the test set's sampling error", "greater", _MARGIN)
_RULE_LCN_MLP = stats.Rule("test accuracy (fraction), LCN minus MLP, paired by seed, per training-set size, with "
                           "the test set's sampling error", "greater", _MARGIN)

CLAIMS = [
    ledger.Claim("weight_sharing_efficiency", "Sharing one filter across positions makes a conv layer far more "
                 "parameter-efficient than an unshared (locally-connected) or dense layer.",
                 "Wikipedia, 'Convolutional neural network'; Goodfellow et al. 2016, ch. 9",
                 "parameters of the CNN vs the LCN and MLP of the same shapes; supported if >= `factor` (10x) fewer",
                 _judge_efficiency),
    ledger.Claim("weight_sharing_learns_better", "Weight sharing is what makes CNNs learn images well: with the same "
                 "local receptive fields, a CNN beats a net whose weights are not shared.", "CNN explainers",
                 "test accuracy, CNN vs locally-connected net at each training-set size (10 seeds): the paired "
                 "difference's 95 % interval (seed spread plus test-set sampling error) must clear half a point; "
                 "supported at every size: supported, at some: partly; refuted where it lies wholly below",
                 _judge_pairwise(_RULE_CNN_LCN, "cnn", "lcn"), rule=_RULE_CNN_LCN),
    ledger.Claim("local_connectivity", "Local connectivity alone helps: a locally-connected net (local, unshared) "
                 "beats a fully-connected one.", "Goodfellow et al. 2016, ch. 9 (sparse interactions)",
                 "test accuracy, LCN vs MLP at each training-set size (10 seeds): the paired difference's 95 % "
                 "interval (seed spread plus test-set sampling error) must clear half a point; supported at every "
                 "size: supported, at some: partly; refuted where it lies wholly below",
                 _judge_pairwise(_RULE_LCN_MLP, "lcn", "mlp"), rule=_RULE_LCN_MLP),
]
