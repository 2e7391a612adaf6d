"""Pooling downsamples and helps: max vs average vs L2 vs strided conv vs no downsampling.

The same 2-conv net (`poolnet`: conv -> ReLU -> downsample, twice, then a global-average-pool head, so every
variant has the same head and parameter count) with only the downsampling changed, on MNIST-1D at several
training-set sizes and on real 8x8 digits centred on a 16x16 canvas, plus each variant's shift consistency
(Zhang 2019; the translation experiment's metric). Each variant trains at its own learning rate, chosen per data
set on a validation split of the training set (`cnnlab.training.tuning`: 24 trainings), then 10 seeds: 160
trainings of 2,000 cosine-decayed steps (2-D: 1,500, warming up over the first 150): every variant fits the
MNIST-1D training sets and the 2-D one (results.md prints train beside test accuracy). The first design's
500 / 300 constant-rate steps at one shared rate left most variants far from fitting, so its ranking measured the
budget; without the 2-D warm-up some nets stalled at chance (docs/report.md). The
CLAIMS judges compare test accuracies per setting (each MNIST-1D size, and 2-D), paired by seed (the arms of a seed
share its data subset and batch order), with the test set's paired sampling error from per-example outcomes.

Anchor: the MNIST-1D pooling benchmark at 1k/5k/10k training examples — no pool 59/92/94, stride
57/90/91, max 78/95/97, avg 78/94/96 (flatten heads: there "no pool" has a larger head). MNIST-1D's default split
has only 4,000 training examples, so we use fractions of it (1,000 / 2,000 / 4,000); only the 1k column is
directly comparable.

Command:  python run.py --exp=pooling
Result:   see REPORT.md (ledger) and the run's results.md.
"""

import os

import ml_collections
import numpy as np

import experiments
from cnnlab import data, models
from cnnlab.errors import UserError
from cnnlab.ops import shift
from cnnlab.report import figures, ledger, rates, rendering as reporting, stats, tables
from cnnlab.training import inference, sweep, train, tuning

ANCHOR_1K = {"none": 59, "stride": 57, "max": 78, "avg": 78}  # MNIST-1D pooling benchmark, 1k training examples
_DATA_LABELS = {"1d": "MNIST-1D", "2d": "2-D digits"}  # keys of results["learning_rates"]
LABELS = {"none": "no downsampling", "stride": "stride-2 conv", "max": "max pool", "avg": "average pool",
          "l2": "L2 pool", "maxblur": "max-blur pool"}


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = experiments.new_config(quick)
  c.data = data.get_config()
  c.data.name = "mnist1d"           # 4,000 train / 1,000 test signals of length 40
  c.train = train.get_config()
  c.train.update(dict(steps=2000, batch_size=100, learning_rate=1e-2, schedule="cosine", log_every=100,
                      checkpoint_every=1000))  # learning_rate: every variant's when lr_grid is empty
  # Rates tried per variant and data set (1-D, 2-D) on a validation split of the training set; () uses the
  # configured ones. 0.1: with a top of 0.03, most arms chose the top rate; 0.3 was probed with the 2-D warm-up
  # and validated no better (docs/report.md).
  c.lr_grid = (3e-3, 1e-2, 3e-2, 1e-1)
  c.tuning_seeds = 3               # tuning trainings per (variant, rate), seeds seed_base..: tuning.choose
  c.variants = ("none", "stride", "max", "avg")  # downsampling after each conv ("l2", "maxblur" also exist)
  c.features = (32, 32)             # conv channels per stage
  c.kernel_size = 5                 # 1-D conv window
  # 'gap': one head (features[-1] x classes) for every variant; 'flatten' gives "none" a 4x (1-D) / 16x (2-D) head.
  c.head = "gap"
  c.train_fractions = (0.25, 0.5, 1.0)  # stratified fractions of MNIST-1D's 4,000 training signals
  c.seeds = 10                      # seeds per (variant, fraction): init, data subset, batch order
  # First seed: this run uses seeds seed_base .. seed_base + seeds - 1 (another base draws a disjoint set).
  c.seed_base = 0
  c.consistency_shift = 3           # two random translations in [-k, k] per test example (zero fill)
  c.image = ml_collections.ConfigDict()
  c.image.data = data.get_config()
  c.image.data.name = "digits"      # the 2-D set: real 8x8 digits
  c.image.canvas = 16               # centred on a 16x16 zero canvas (room to translate)
  c.image.features = (16, 32)       # conv channels per stage (3x3)
  c.image.train = train.get_config()
  # warmup_steps: without a warm-up, Adam's first full-size steps leave some 2-D nets dead at chance or short of
  # fitting (the "none" and "avg" variants; docs/report.md, "Warm-up for the 2-D nets").
  c.image.train.update(dict(steps=1500, batch_size=64, learning_rate=1e-2, schedule="cosine", warmup_steps=150,
                            log_every=100, checkpoint_every=750))
  if quick:
    c.data.name = "digits"  # quick runs skip MNIST-1D generation: 8x8 digits read as 64-sample signals
    c.tuning_seeds = 1
    for t in (c.train, c.image.train):
      t.steps = 20
      t.batch_size = 32
      t.log_every = 10
      t.checkpoint_every = 20
      t.warmup_steps = 0
      t.eval_batch_size = 200
      t.tensorboard = False
    c.variants = ("none", "max", "avg")  # avg too: the report's max-vs-average claim needs it
    c.lr_grid = ()
    c.features = (4, 4)
    c.train_fractions = (0.5, 1.0)
    c.seeds = 2
    c.image.canvas = 12
    c.image.features = (4, 8)
  return c


def validate_config(config: ml_collections.ConfigDict) -> None:
  """One-line errors for impossible settings, before anything is written."""
  if config.seeds < 1 or config.seed_base < 0 or not config.train_fractions or config.head not in ("gap", "flatten"):
    raise UserError("pooling needs seeds >= 1, seed_base >= 0, a training fraction and head 'gap' or 'flatten'")
  if config.lr_grid:
    tuning.check_grid(config.lr_grid, config.tuning_seeds)


def _trial(config, tcfg, net, ds, name, seed, tags) -> sweep.Trial:
  """One variant's training, after which its per-example test outcomes and shift consistency are measured."""
  def consistency(state, ds):
    return {"consistency": shift.consistency(state, ds.x_test, config.consistency_shift, seed=1000 + seed,
                                             batch_size=tcfg.eval_batch_size), **inference.test_correct(state, ds)}
  return sweep.Trial(name, net, ds, seed, tcfg, tags, after_fit=consistency)


def _signals(ds: data.Dataset) -> data.Dataset:
  if ds.x_train.ndim == 3:
    return ds
  f = lambda x: x.reshape(x.shape[0], -1, x.shape[-1])
  return data.Dataset(ds.name, f(ds.x_train), ds.y_train, f(ds.x_test), ds.y_test, ds.num_classes)


def measure(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Per-seed train / test accuracy and shift consistency of every variant: MNIST-1D per training fraction, and 2-D."""
  seeds = range(config.seed_base, config.seed_base + config.seeds)
  ds1 = _signals(data.load(config.data))
  nets1 = {v: models.create("poolnet", features=tuple(config.features), kernel_size=config.kernel_size,
                            downsample=v, head=config.head, num_classes=ds1.num_classes) for v in config.variants}
  configs1, rates1 = _rates(config, config.train, nets1, ds1, os.path.join(workdir, "1d"))
  subsets = {(f, seed): data.subsample(ds1, f, seed) for f in config.train_fractions for seed in seeds}
  rec1 = sweep.run_trials(workdir, [
      _trial(config, configs1[v], net, sub, f"1d_{v}_f{f}_s{seed}", seed,
             {"variant": v, "fraction": f, "n_train": len(sub.y_train)})
      for (f, seed), sub in subsets.items() for v, net in nets1.items()], progress=config.train.progress)
  ds2 = shift.canvas_dataset(data.load(config.image.data), config.image.canvas)
  nets2 = {v: models.create("poolnet", features=tuple(config.image.features), downsample=v, head=config.head,
                            num_classes=ds2.num_classes) for v in config.variants}
  configs2, rates2 = _rates(config, config.image.train, nets2, ds2, os.path.join(workdir, "2d"))
  rec2 = sweep.run_trials(
      workdir, [_trial(config, configs2[v], net, ds2, f"2d_{v}_s{seed}", seed, {"variant": v})
                for seed in seeds for v, net in nets2.items()], progress=config.train.progress)
  cells1 = lambda metric: {f"{v}@{f}": a for (v, f), a in sweep.group(rec1, ("variant", "fraction"), metric).items()}
  cells2 = lambda metric: {v: a for (v,), a in sweep.group(rec2, ("variant",), metric).items()}
  metrics = ("test_accuracy", "train_accuracy", "consistency", "test_correct")
  return {"dataset_1d": ds1.name, "n_test_1d": len(ds1.y_test), "n_test_2d": len(ds2.y_test),
          **{f"mnist1d_{m}": cells1(m) for m in metrics}, **{f"image_{m}": cells2(m) for m in metrics},
          "params_1d": {r["variant"]: r["params"] for r in rec1},
          "params_2d": {r["variant"]: r["params"] for r in rec2},
          "n_train": {str(r["fraction"]): r["n_train"] for r in rec1},
          "learning_rates": {"1d": rates1, "2d": rates2}, "records": rec1 + rec2}


def _rates(config: ml_collections.ConfigDict, train_config: ml_collections.ConfigDict, nets: dict, ds,
           workdir: str) -> tuple[dict, dict]:
  """(each variant's training config at its validated rate, the tuning table); ({v: train_config}, {}) untuned."""
  if not config.lr_grid:
    return dict.fromkeys(nets, train_config), {}
  table = tuning.learning_rates(workdir, train_config, nets, ds, config.lr_grid, config.train.progress,
                                config.tuning_seeds, config.seed_base)
  return {v: tuning.with_rate(train_config, t["chosen"]) for v, t in table.items()}, table


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Measures, writes results.json, results.md and the figure to `workdir`; returns the measurements."""
  results = measure(config, workdir)
  results["smoke_test"] = config.smoke_test
  _plot(workdir, results)
  return reporting.publish(workdir, results, render(results, config))


def _effect(results: dict, a: str, b: str, setting: str, metric: str = "test_accuracy") -> stats.Effect:
  """Variant a minus b in one setting (an MNIST-1D n_train key, or "2-D"), paired by seed, with test-set error.

  Test accuracy pairs the two arms' per-example outcomes (McNemar's variance); consistency adds two binomials.
  """
  key = lambda v: v if setting == "2-D" else f"{v}@{setting}"
  prefix, n = ("image", results["n_test_2d"]) if setting == "2-D" else ("mnist1d", results["n_test_1d"])
  if metric == "test_accuracy":
    correct = results[f"{prefix}_test_correct"]
    return stats.paired_accuracy(correct[key(a)], correct[key(b)])
  va, vb = results[f"{prefix}_{metric}"][key(a)], results[f"{prefix}_{metric}"][key(b)]
  return stats.with_test_set_error(stats.paired(va, vb), [np.mean(va), np.mean(vb)], n)


def _comparisons(results: dict) -> dict[str, list[tuple[str, str]]]:
  """The claims' comparisons (a, b) of variants measured: a pool against each baseline, max against average."""
  have = set(results["image_test_accuracy"])
  helps = [(p, b) for p in ("max", "avg") for b in ("none", "stride") if {p, b} <= have]
  return {"helps": helps, "max_vs_avg": [("max", "avg")] if {"max", "avg"} <= have else []}


def render(results: dict, config: ml_collections.ConfigDict) -> str:
  """results.md: train / test accuracy and consistency tables, per-setting effects, the verdicts of CLAIMS."""
  acc1, tr1, cons1, acc2, tr2, cons2 = (results[k] for k in (
      "mnist1d_test_accuracy", "mnist1d_train_accuracy", "mnist1d_consistency", "image_test_accuracy",
      "image_train_accuracy", "image_consistency"))
  fr, n_train, variants = list(results["n_train"]), results["n_train"], list(acc2)
  full, fmt = fr[-1], lambda v: reporting.fmt_mean_std(v, 100)
  settings = fr + ["2-D"]
  ci = lambda e: "{:+.1f} [{:+.1f}, {:+.1f}]".format(*(100 * v for v in (e.estimate, *e.interval())))
  pairs = [p for ps in _comparisons(results).values() for p in ps]
  effect_rows = [[f"{LABELS[a]} − {LABELS[b]}{', consistency' if m == 'consistency' else ''}"]
                 + [ci(_effect(results, a, b, s, m)) for s in settings]
                 for m in ("test_accuracy", "consistency") for a, b in pairs]
  return "".join([
      "# Pooling: none vs strided vs max vs average on MNIST-1D and 2-D digits\n\n",
      f"Same 2-conv net with a {'global-average-pool' if config.head == 'gap' else config.head} head, only the "
      f"downsampling differs. {config.seeds} seeds from seed "
      f"{config.seed_base}; MNIST-1D: {config.train.steps} Adam steps of batch {config.train.batch_size} "
      f"({config.train.schedule} schedule); test set {results['n_test_1d']}. Accuracy in %, mean ± std "
      f"(train / test).\n\n{_rates_line(results)}\n\n",
      f"## MNIST-1D (`{results['dataset_1d']}`), train / test accuracy vs training-set size\n\n",
      "MNIST-1D's default split has 4,000 training examples, so sizes are fractions of it; the benchmark "
      "anchor (flatten heads) is at 1k/5k/10k examples (only its 1k column is comparable).\n\n",
      reporting.markdown_table(
          ["downsampling", "params"] + [f"{n_train[f]:,} ex." for f in fr] + ["anchor, 1k"]
          + [f"consistency, {n_train[full]:,} ex."],
          [[LABELS[v], results["params_1d"][v]] + [f"{fmt(tr1[f'{v}@{f}'])} / {fmt(acc1[f'{v}@{f}'])}" for f in fr]
           + [ANCHOR_1K.get(v, "—"), fmt(cons1[f"{v}@{full}"])] for v in variants]),
      f"\n## 2-D: real digits on a {config.image.canvas}x{config.image.canvas} canvas "
      f"({config.image.train.steps} steps"
      + (f", the first {config.image.train.warmup_steps} warming up" if config.image.train.warmup_steps else "")
      + f"; test set {results['n_test_2d']})\n\n",
      reporting.markdown_table(["downsampling", "params", "train accuracy", "test accuracy", "consistency"],
                               [[LABELS[v], results["params_2d"][v], fmt(tr2[v]), fmt(acc2[v]), fmt(cons2[v])]
                                for v in variants]),
      f"\nConsistency: % of test examples whose predicted class agrees under two random translations in "
      f"[-{config.consistency_shift}, {config.consistency_shift}] per axis (zero fill).\n\n",
      "## Differences (pts): estimate [95 % CI], paired by seed, with the test set's sampling error\n\n",
      reporting.markdown_table(["comparison"] + [f"{n_train[f]:,} ex." for f in fr] + ["2-D"],
                               effect_rows) if pairs else "No comparison measured.\n",
      "\n", tables.verdicts_section(CLAIMS, results), "\n![accuracy](pooling.png)\n"])


def _rates_line(results: dict) -> str:
  """Each variant's learning rate per data set and how it was chosen (validation accuracy per rate)."""
  tables_ = results.get("learning_rates") or {}
  if not any(tables_.values()):
    return "Every variant at the configured learning rate (no tuning)."
  return " ".join(rates.sentence({LABELS[v]: t for v, t in table.items()}, f"variant on {_DATA_LABELS[where]}")
                  for where, table in tables_.items())


def _plot(workdir: str, results: dict) -> None:
  fig, ax = reporting.new_figure(figsize=(6, 4))
  acc1, fr = results["mnist1d_test_accuracy"], list(results["n_train"])
  figures.errorbar_curves(ax, [results["n_train"][f] for f in fr],
                          {LABELS[v]: [acc1[f"{v}@{f}"] for f in fr] for v in results["image_test_accuracy"]},
                          scale=100, xlabel="training examples (MNIST-1D)", ylabel="test accuracy (%)")
  reporting.save_figure(fig, workdir, "pooling")


# A point of test accuracy: a smaller gain is within what retuning the learning rate moves, not a "help" a
# practitioner would choose a layer for (and the MNIST-1D authors' own max-vs-average gap, 0.2 points, is below it).
_RULE_HELPS = stats.Rule("test accuracy (fraction), a pool (max, average) minus each baseline (no downsampling, "
                         "stride-2 conv), paired by seed, with the test set's paired sampling error; per MNIST-1D "
                         "training-set size and on 2-D digits", "greater", 0.01)
_RULE_MAX_AVG = stats.Rule("test accuracy (fraction), max minus average pooling, paired by seed, with the test set's "
                           "paired sampling error; per MNIST-1D training-set size and on 2-D digits", "greater", 0.01)


def _judge(rule: stats.Rule, pairs: list[tuple[str, str]], results: dict) -> ledger.Finding:
  n = results["n_train"]
  verdict, figure = stats.judge(rule, [(f"{a} − {b}, {f'{n[s]:,} ex.' if s in n else s}", _effect(results, a, b, s))
                                       for a, b in pairs for s in [*n, "2-D"]], scale=100, unit=" pts")
  return ledger.Finding(figure, verdict)


def _judge_pooling_helps(results: dict) -> ledger.Finding:
  acc, sizes = results["mnist1d_test_accuracy"], list(results["n_train"])
  rows = ", ".join(f"{v} " + "/".join(f"{100 * np.mean(acc[f'{v}@{s}']):.0f}" for s in sizes)
                   for v in dict.fromkeys(k.split("@")[0] for k in acc))
  finding = _judge(_RULE_HELPS, _comparisons(results)["helps"], results)
  return ledger.Finding(f"1-D accuracy % at {'/'.join(str(results['n_train'][s]) for s in sizes)} examples: {rows}; "
                        f"{finding.figure}", finding.verdict)


def _judge_max_vs_avg(results: dict) -> ledger.Finding:
  return _judge(_RULE_MAX_AVG, _comparisons(results)["max_vs_avg"], results)


CLAIMS = [
    ledger.Claim("pooling_helps", "Pooling layers help a CNN: downsampling by max/average pooling beats no "
                 "downsampling and strided convolution.", "CNN explainers; Scherer et al. 2010",
                 "test accuracy of the same net (equal heads and parameters) with only its downsampling changed, "
                 "on MNIST-1D at 3 training-set sizes and on 8x8 digits on a 16x16 canvas; each pool against no "
                 "downsampling and against the stride-2 conv", _judge_pooling_helps, rule=_RULE_HELPS),
    ledger.Claim("max_beats_average", "Max pooling works better than average pooling.", "Scherer et al. 2010; CNN "
                 "explainers", "test accuracy, max vs average pooling in the same net, MNIST-1D and 2-D digits",
                 _judge_max_vs_avg, rule=_RULE_MAX_AVG),
]
