"""Pooling downsamples and helps: max vs average vs L2 vs strided conv vs no downsampling.

The same 2-conv net (`poolnet`: conv -> ReLU -> downsample, twice, then a linear head) with only the
downsampling changed, on MNIST-1D at several training-set sizes and on real 8x8 digits centred on
a 16x16 canvas, plus each variant's shift consistency (Zhang 2019; the translation experiment's metric).
48 trainings (500 steps; 2-D: 300); the CLAIMS judges turn the per-seed accuracies into verdicts.

Anchor: the MNIST-1D pooling benchmark at 1k/5k/10k training examples — no pool 59/92/94, stride
57/90/91, max 78/95/97, avg 78/94/96. MNIST-1D's default split has only 4,000 training examples, so
we use fractions of it (1,000 / 2,000 / 4,000); only the 1k column is directly comparable.

Command:  python run.py --exp=pooling
Result:   see REPORT.md (ledger) and the run's results.md.
"""

import ml_collections
import numpy as np

import experiments
from cnnlab import data, models
from cnnlab.ops import shift
from cnnlab.report import figures, ledger, rendering as reporting, tables, verdicts
from cnnlab.training import sweep, train

ANCHOR_1K = {"none": 59, "stride": 57, "max": 78, "avg": 78}  # MNIST-1D pooling benchmark, 1k training examples
LABELS = {"none": "no downsampling", "stride": "stride-2 conv", "max": "max pool", "avg": "average pool",
          "l2": "L2 pool", "maxblur": "max-blur pool"}


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = experiments.new_config(quick)
  c.data = data.get_config()
  c.data.name = "mnist1d"           # 4,000 train / 1,000 test signals of length 40
  c.train = train.get_config()
  c.train.steps = 500
  c.train.batch_size = 100
  c.train.learning_rate = 3e-3
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  c.variants = ("none", "stride", "max", "avg")  # downsampling after each conv ("l2", "maxblur" also exist)
  c.features = (32, 32)             # conv channels per stage
  c.kernel_size = 5                 # 1-D conv window
  c.train_fractions = (0.25, 0.5, 1.0)  # stratified fractions of MNIST-1D's 4,000 training signals
  c.seeds = 3                       # seeds per (variant, fraction)
  c.consistency_shift = 3           # two random translations in [-k, k] per test example (zero fill)
  c.image = ml_collections.ConfigDict()
  c.image.data = data.get_config()
  c.image.data.name = "digits"      # the 2-D set: real 8x8 digits
  c.image.canvas = 16               # centred on a 16x16 zero canvas (room to translate)
  c.image.features = (16, 32)       # conv channels per stage (3x3)
  c.image.train = train.get_config()
  c.image.train.steps = 300
  c.image.train.batch_size = 64
  c.image.train.learning_rate = 2e-3
  c.image.train.log_every = 100
  c.image.train.checkpoint_every = 300
  if quick:
    c.data.name = "digits"  # quick runs skip MNIST-1D generation: 8x8 digits read as 64-sample signals
    for t in (c.train, c.image.train):
      t.steps = 20
      t.batch_size = 32
      t.log_every = 10
      t.checkpoint_every = 20
      t.eval_batch_size = 200
      t.tensorboard = False
    c.variants = ("none", "max", "avg")  # avg too: the report's max-vs-average claim needs it
    c.features = (4, 4)
    c.train_fractions = (0.5, 1.0)
    c.seeds = 2
    c.image.canvas = 12
    c.image.features = (4, 8)
  return c


def _trial(config, tcfg, net, ds, name, seed, tags) -> sweep.Trial:
  """One variant's training, after which its shift consistency on the test set is measured."""
  def consistency(state, ds):
    return {"consistency": shift.consistency(state, ds.x_test, config.consistency_shift, seed=1000 + seed,
                                             batch_size=tcfg.eval_batch_size)}
  return sweep.Trial(name, net, ds, seed, tcfg, tags, after_fit=consistency)


def _signals(ds: data.Dataset) -> data.Dataset:
  if ds.x_train.ndim == 3:
    return ds
  f = lambda x: x.reshape(x.shape[0], -1, x.shape[-1])
  return data.Dataset(ds.name, f(ds.x_train), ds.y_train, f(ds.x_test), ds.y_test, ds.num_classes)


def _group(records, keys, metric):
  out = {}
  for r in records:
    out.setdefault(tuple(r[k] for k in keys), []).append(r[metric])
  return out


def measure(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Per-seed test accuracy and shift consistency of every variant: MNIST-1D per training fraction, and 2-D."""
  ds1 = _signals(data.load(config.data))
  nets1 = {v: models.create("poolnet", features=tuple(config.features), kernel_size=config.kernel_size,
                            downsample=v, num_classes=ds1.num_classes) for v in config.variants}
  subsets = {(f, seed): data.subsample(ds1, f, seed) for f in config.train_fractions for seed in range(config.seeds)}
  rec1 = sweep.run_trials(workdir, [
      _trial(config, config.train, net, sub, f"1d_{v}_f{f}_s{seed}", seed,
             {"variant": v, "fraction": f, "n_train": len(sub.y_train)})
      for (f, seed), sub in subsets.items() for v, net in nets1.items()], progress=config.train.progress)
  ds2 = shift.canvas_dataset(data.load(config.image.data), config.image.canvas)
  nets2 = {v: models.create("poolnet", features=tuple(config.image.features), downsample=v,
                            num_classes=ds2.num_classes) for v in config.variants}
  rec2 = sweep.run_trials(
      workdir, [_trial(config, config.image.train, net, ds2, f"2d_{v}_s{seed}", seed, {"variant": v})
                for seed in range(config.seeds) for v, net in nets2.items()], progress=config.train.progress)
  cells1 = lambda metric: {f"{v}@{f}": a for (v, f), a in _group(rec1, ("variant", "fraction"), metric).items()}
  cells2 = lambda metric: {v: a for (v,), a in _group(rec2, ("variant",), metric).items()}
  return {"dataset_1d": ds1.name, "n_test_1d": len(ds1.y_test), "mnist1d_test_accuracy": cells1("test_accuracy"),
          "mnist1d_consistency": cells1("consistency"), "image_test_accuracy": cells2("test_accuracy"),
          "image_consistency": cells2("consistency"), "params_1d": {r["variant"]: r["params"] for r in rec1},
          "params_2d": {r["variant"]: r["params"] for r in rec2},
          "n_train": {str(r["fraction"]): r["n_train"] for r in rec1}, "records": rec1 + rec2}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Measures, writes results.json, results.md and the figure to `workdir`; returns the measurements."""
  results = measure(config, workdir)
  results["smoke_test"] = config.smoke_test
  _plot(workdir, results)
  return reporting.publish(workdir, results, render(results, config))


def _pools(results: dict) -> list[str]:
  """The pooling variants measured (the downsamplings that pool a window rather than subsample)."""
  return [v for v in ("max", "avg", "l2") if v in results["image_test_accuracy"]]


def _pool_beats(results: dict, baseline: str, metric: str = "test_accuracy", sizes=None) -> dict[str, bool]:
  """Per '{pool}@{size}' (MNIST-1D) and '{pool}@2d': is the pool's `metric` > 2 SE above `baseline`'s?"""
  one, two = results[f"mnist1d_{metric}"], results[f"image_{metric}"]
  sizes = list(results["n_train"]) if sizes is None else sizes
  out = {f"{p}@{f}": verdicts.clearly_greater(one[f"{p}@{f}"], one[f"{baseline}@{f}"])
         for p in _pools(results) for f in sizes}
  out.update({f"{p}@2d": verdicts.clearly_greater(two[p], two[baseline]) for p in _pools(results)})
  return out


def render(results: dict, config: ml_collections.ConfigDict) -> str:
  """results.md: accuracy and consistency tables, the verdicts of CLAIMS and the case-by-case comparisons."""
  acc1, cons1, acc2, cons2 = (results[k] for k in ("mnist1d_test_accuracy", "mnist1d_consistency",
                                                   "image_test_accuracy", "image_consistency"))
  fr, n_train, variants = list(results["n_train"]), results["n_train"], list(acc2)
  full = fr[-1]
  fmt = lambda v: reporting.fmt_mean_std(v, 100)
  helps = _pool_beats(results, "none")
  # Shift consistency is compared at the full training set only (and on 2-D digits).
  consistent = _pool_beats(results, "none", "consistency", sizes=[full])
  md = ["# Pooling: none vs strided vs max vs average on MNIST-1D and 2-D digits\n\n",
        f"Same 2-conv net, only the downsampling differs. {config.seeds} seeds; MNIST-1D: {config.train.steps} Adam "
        f"steps of batch {config.train.batch_size}; test set {results['n_test_1d']}. Accuracy in %, "
        "mean ± std.\n\n",
        f"## MNIST-1D (`{results['dataset_1d']}`), test accuracy vs training-set size\n\n",
        "MNIST-1D's default split has 4,000 training examples, so sizes are fractions of it; the benchmark "
        "anchor is at 1k/5k/10k examples (only its 1k column is comparable).\n\n",
        reporting.markdown_table(
            ["downsampling", "params"] + [f"{n_train[f]:,} ex." for f in fr] + ["anchor, 1k"]
            + [f"consistency, {n_train[full]:,} ex."],
            [[LABELS[v], results["params_1d"][v]] + [fmt(acc1[f"{v}@{f}"]) for f in fr]
             + [ANCHOR_1K.get(v, "—"), fmt(cons1[f"{v}@{full}"])] for v in variants]),
        f"\n## 2-D: real digits on a {config.image.canvas}x{config.image.canvas} canvas "
        f"({config.image.train.steps} steps)\n\n",
        reporting.markdown_table(["downsampling", "params", "test accuracy", "consistency"],
                                 [[LABELS[v], results["params_2d"][v], fmt(acc2[v]), fmt(cons2[v])]
                                  for v in variants]),
        f"\nConsistency: % of test examples whose predicted class agrees under two random translations in "
        f"[-{config.consistency_shift}, {config.consistency_shift}] per axis (zero fill).\n\n",
        tables.verdicts_section(CLAIMS, results),
        "\nPooling clearly above no downsampling (2 standard errors): "
        + ", ".join(f"{k} {'yes' if b else 'no'}" for k, b in helps.items()) + ".\n"]
  if "stride" in variants:
    vs_stride = _pool_beats(results, "stride")
    vs_stride = {k: b for k, b in vs_stride.items() if not k.endswith("@2d")}  # MNIST-1D sizes only
    md.append("Pooling clearly above the stride-2 conv in {}/{} cases.\n".format(*verdicts.count_true(vs_stride)))
  md.append("Pooling makes predictions more shift-consistent than no downsampling (> 2 standard errors) in "
            "{}/{} cases.\n\n![accuracy](pooling.png)\n".format(*verdicts.count_true(consistent)))
  return "".join(md)


def _plot(workdir: str, results: dict) -> None:
  fig, ax = reporting.new_figure(figsize=(6, 4))
  acc1, fr = results["mnist1d_test_accuracy"], list(results["n_train"])
  # Population std (ddof=0) in these error bars, as this plot has always drawn them; the tables use ddof=1.
  figures.errorbar_curves(ax, [results["n_train"][f] for f in fr],
                          {LABELS[v]: [acc1[f"{v}@{f}"] for f in fr] for v in results["image_test_accuracy"]},
                          scale=100, ddof=0, xlabel="training examples (MNIST-1D)", ylabel="test accuracy (%)")
  reporting.save_figure(fig, workdir, "pooling")


def _judge_pooling_helps(results: dict) -> ledger.Finding:
  held, total = verdicts.count_true(_pool_beats(results, "none"))
  acc = results["mnist1d_test_accuracy"]
  sizes = list(results["n_train"])
  variants = dict.fromkeys(k.split("@")[0] for k in acc)
  rows = ", ".join(f"{v} " + "/".join(f"{100 * np.mean(acc[f'{v}@{s}']):.0f}" for s in sizes) for v in variants)
  return ledger.Finding(f"1-D accuracy % at {'/'.join(str(results['n_train'][s]) for s in sizes)} examples: {rows}; "
                        f"a pool beats no downsampling in {held}/{total} settings (incl. 2-D digits)",
                        verdicts.from_counts(held, total))


def _judge_max_vs_avg(results: dict) -> ledger.Finding:
  acc = results["mnist1d_test_accuracy"]
  settings = [(f"{s}", acc[f"max@{s}"], acc[f"avg@{s}"]) for s in results["n_train"]]
  settings.append(("2-D", results["image_test_accuracy"]["max"], results["image_test_accuracy"]["avg"]))
  held = sum(verdicts.clearly_greater(mx, av) for _, mx, av in settings)
  diffs = ", ".join(f"{100 * (np.mean(mx) - np.mean(av)):+.1f}" for _, mx, av in settings)
  return ledger.Finding(f"max - avg accuracy (points) per setting: {diffs}; max ahead by > 2 SE in "
                        f"{held}/{len(settings)}", verdicts.from_counts(held, len(settings)))


CLAIMS = [
    ledger.Claim("pooling_helps", "Pooling layers help a CNN: downsampling by max/average pooling beats no "
                 "downsampling and strided convolution.", "CNN explainers; Scherer et al. 2010",
                 "test accuracy (3 seeds) of the same net with only its downsampling changed, on MNIST-1D at 3 "
                 "training-set sizes and on 8x8 digits on a 16x16 canvas; > 2 SE counts", _judge_pooling_helps),
    ledger.Claim("max_beats_average", "Max pooling works better than average pooling.", "Scherer et al. 2010; CNN "
                 "explainers", "test accuracy, max vs average pooling in the same net, per setting; > 2 SE counts",
                 _judge_max_vs_avg),
]
