"""Weight sharing makes conv layers far more parameter-efficient than dense ones, and is what makes CNNs learn images well.

Ablation separating the two ingredients of a conv layer: CNN (local + shared) vs locally-connected
net (LCN: local, not shared; same architecture, `nn.ConvLocal`) vs MLP (neither), trained on 10%,
30% and 100% of the training set, 3 seeds each (27 trainings). Measures parameter counts and per-seed
train / test accuracy; the CLAIMS judges turn them into verdicts.

Command:  python run.py --exp=weight_sharing          (mnist5k: 4,000 train / 1,000 test real MNIST digits)
          python run.py --exp=weight_sharing --config.data.name=digits
Result:   see REPORT.md (ledger) and the run's results.md.
"""

from typing import Callable

import ml_collections
import numpy as np

import experiments
from cnnlab import data, models
from cnnlab.ops import analysis
from cnnlab.report import figures, ledger, rendering as reporting, tables, verdicts
from cnnlab.training import sweep, train
from cnnlab.errors import UserError

MODEL_LABELS = {"cnn": "CNN (local + shared)", "lcn": "LCN (local, unshared)", "mlp": "MLP (dense)"}


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = experiments.new_config(quick)
  c.data = data.get_config()
  c.train = train.get_config()
  c.train.steps = 300
  c.train.batch_size = 64
  c.train.learning_rate = 1e-3
  c.train.log_every = 100
  c.train.checkpoint_every = 300
  c.features = (8, 16)             # conv channels per stage of both CNN and LCN (each: conv, ReLU, 2x2 max pool)
  c.kernel_size = 3                # conv / locally-connected window
  c.mlp_hidden = (256, 256)        # MLP hidden widths (same depth as the conv stack)
  c.train_fractions = (0.1, 0.3, 1.0)  # stratified fractions of the training set
  c.seeds = 3                      # seeds per (model, fraction); init, batch order and subset all depend on it
  c.factor = 10.0                  # "far more parameter-efficient": at least this many times fewer parameters
  if quick:
    c.data.name = "digits"
    c.train.steps = 20
    c.train.batch_size = 32
    c.train.log_every = 10
    c.train.checkpoint_every = 10
    c.train.eval_batch_size = 200
    c.train_fractions = (0.3, 1.0)
    c.seeds = 2
    c.features = (4, 8)
    c.mlp_hidden = (32, 32)
  return c


def build_models(config: ml_collections.ConfigDict, num_classes: int) -> dict:
  conv = dict(features=tuple(config.features), kernel_size=config.kernel_size, num_classes=num_classes)
  return {"cnn": models.create("cnn", **conv), "lcn": models.create("lcn", **conv),
          "mlp": models.create("mlp", hidden=tuple(config.mlp_hidden), num_classes=num_classes)}


def validate_config(config: ml_collections.ConfigDict) -> None:
  """One-line errors for impossible settings, before anything is written."""
  if config.seeds < 1 or not config.train_fractions or not config.features or config.kernel_size < 1:
    raise UserError("weight_sharing needs seeds >= 1, at least one train fraction and conv stage, kernel_size >= 1")
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
  trials = []
  for fraction in config.train_fractions:
    for seed in range(config.seeds):
      subset = data.subsample(ds, fraction, seed)
      for name, net in nets.items():
        trials.append(sweep.Trial(f"{name}_f{fraction}_s{seed}", net, subset, seed, config.train,
                                  {"model": name, "fraction": fraction, "n_train": len(subset.y_train)}))
  records = sweep.run_trials(workdir, trials, progress=config.train.progress)
  test = sweep.group(records, ("model", "fraction"), "test_accuracy")
  train_acc = sweep.group(records, ("model", "fraction"), "train_accuracy")
  return {"dataset": ds.name, "n_test": len(ds.y_test), "factor": config.factor, "params": params,
          "conv_layers": conv_rows, "test_accuracy": {f"{m}@{f}": v for (m, f), v in test.items()},
          "train_accuracy": {f"{m}@{f}": v for (m, f), v in train_acc.items()},
          "n_train": {str(r["fraction"]): r["n_train"] for r in records}, "records": records}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Measures, writes results.json, results.md and the figure to `workdir`; returns the measurements."""
  results = measure(config, workdir)
  results["smoke_test"] = config.smoke_test
  _plot(workdir, results)
  return reporting.publish(workdir, results, render(results, config))


def render(results: dict, config: ml_collections.ConfigDict) -> str:
  """results.md: parameter and accuracy tables, and the verdicts of CLAIMS."""
  params, fr = results["params"], list(results["n_train"])
  accuracy = lambda key: lambda m, f: results[key][f"{m}@{f}"]
  return "".join([
      f"# Weight sharing: CNN vs locally-connected net vs MLP on `{results['dataset']}`\n",
      f"{config.seeds} seeds per cell, {config.train.steps} Adam steps of batch {config.train.batch_size}; "
      f"test set: {results['n_test']} examples. Accuracy in %, mean ± std over seeds.\n",
      "## Parameters\n",
      reporting.markdown_table(["model", "parameters", "x CNN"],
                               [[MODEL_LABELS[m], params[m], f"{params[m] / params['cnn']:.1f}"] for m in MODEL_LABELS]),
      "\nConv layers, shared vs unshared (same input, output and receptive field):\n\n",
      reporting.markdown_table(["layer", "CNN params", "LCN params", "LCN / CNN"],
                               [[a, b, c, f"{d:.0f}x"] for a, b, c, d in results["conv_layers"]]),
      "\n## Test accuracy vs training-set size\n",
      tables.mean_std_table(MODEL_LABELS, {f: f"{float(f):.0%} ({results['n_train'][f]} ex.)" for f in fr},
                            accuracy("test_accuracy"), scale=100),
      "\nTrain accuracy (the generalisation gap is train minus test):\n\n",
      tables.mean_std_table(MODEL_LABELS, {f: f"{float(f):.0%}" for f in fr}, accuracy("train_accuracy"),
                            scale=100),
      "\n", tables.verdicts_section(CLAIMS, results),
      "\nCNN above MLP (difference of means > 2 standard errors) at {}/{} training-set sizes.\n".format(
          *_leads(results, "cnn", "mlp")),
      "\n![accuracy vs training-set size](accuracy_vs_size.png)\n"])


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


def _judge_efficiency(results: dict) -> ledger.Finding:
  p = results["params"]
  efficient = all(p["cnn"] * results["factor"] <= p[m] for m in ("lcn", "mlp"))
  return ledger.Finding(f"CNN {p['cnn']:,} params vs LCN {p['lcn']:,} ({p['lcn'] / p['cnn']:.0f}x) and MLP "
                        f"{p['mlp']:,} ({p['mlp'] / p['cnn']:.0f}x)", verdicts.from_flag(efficient))


def _leads(results: dict, a: str, b: str) -> tuple[int, int]:
  """(training-set sizes where model `a`'s test accuracy is above `b`'s by > 2 standard errors, sizes)."""
  acc = results["test_accuracy"]
  return verdicts.count_true([verdicts.clearly_greater(acc[f"{a}@{f}"], acc[f"{b}@{f}"]) for f in results["n_train"]])


def _accuracy_figure(results: dict, models_: tuple[str, ...]) -> str:
  fractions = list(results["n_train"])
  cells = [f"{m.upper()} " + "/".join(f"{100 * np.mean(results['test_accuracy'][f'{m}@{f}']):.1f}" for f in fractions)
           for m in models_]
  sizes = "/".join(f"{results['n_train'][f]:,}" for f in fractions)
  return f"test accuracy % at {sizes} examples: " + ", ".join(cells)


def _judge_pairwise(models_: tuple[str, str]) -> Callable[[dict], ledger.Finding]:
  def judge(results: dict) -> ledger.Finding:
    held, total = _leads(results, *models_)
    return ledger.Finding(f"{_accuracy_figure(results, models_)}; {models_[0].upper()} ahead by > 2 SE at "
                          f"{held}/{total} sizes", verdicts.from_counts(held, total))
  return judge


CLAIMS = [
    ledger.Claim("weight_sharing_efficiency", "Sharing one filter across positions makes a conv layer far more "
                 "parameter-efficient than an unshared (locally-connected) or dense layer.",
                 "Wikipedia, 'Convolutional neural network'; Goodfellow et al. 2016, ch. 9",
                 "parameters of the CNN vs the LCN and MLP of the same shapes; supported if >= `factor` (10x) fewer",
                 _judge_efficiency),
    ledger.Claim("weight_sharing_learns_better", "Weight sharing is what makes CNNs learn images well: with the same "
                 "local receptive fields, a CNN beats a net whose weights are not shared.", "CNN explainers",
                 "test accuracy, CNN vs locally-connected net, 3 seeds at 3 training-set sizes; a size counts when "
                 "the CNN leads by > 2 standard errors", _judge_pairwise(("cnn", "lcn"))),
    ledger.Claim("local_connectivity", "Local connectivity alone helps: a locally-connected net (local, unshared) "
                 "beats a fully-connected one.", "Goodfellow et al. 2016, ch. 9 (sparse interactions)",
                 "test accuracy, LCN vs MLP, 3 seeds at 3 training-set sizes; a size counts when the LCN leads "
                 "by > 2 standard errors", _judge_pairwise(("lcn", "mlp"))),
]
