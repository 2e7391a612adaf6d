"""CNNs also localise: a small CNN finds the class and box of a real digit on a canvas, far better than a same-size MLP.

Single-object detection on canvases of one real MNIST digit (`cnnlab.data.canvas`: mnist5k shrunk to 14x14, pasted
at a random position on 32x32); the target is the class and the box of the digit's strokes. A CNN (3x3 conv + max
pool stages, a dense layer, a class + box head) against an MLP whose hidden width is chosen to give it about the
CNN's parameter count; both trained with cross-entropy + (1 - GIoU) (`train.loss = "class_and_box"`), each at its
rate of `lr_grid` by the mean over `tuning_seeds` trainings on canvases held out of the training set
(`tuning.choose`), then 20 trainings of 1,000 steps (10 seeds per model). Measured on the train and test
canvases: classification accuracy, mean box IoU, the share of digits both classified and localised (IoU >= 0.5,
PASCAL VOC's criterion), with the test set's sampling variance of each paired difference; the trivial prediction's
scores (the most frequent class and the mean training box) and step times. The CLAIMS judges compare them by paired
effects with 95 % intervals (`cnnlab.report.stats`).

Command:  python run.py --exp=localisation
Result:   see REPORT.md (ledger) and the run's results.md.
"""

import functools
import time

import ml_collections
import numpy as np

import experiments
from cnnlab import data, models
from cnnlab.data import canvas
from cnnlab.metrics import sampling
from cnnlab.ops import analysis
from cnnlab.report import ledger, rendering as reporting, stats, tables
from cnnlab.training import inference, losses, sweep, timing, train, tuning
from cnnlab.errors import UserError

LABELS = {"cnn": "CNN", "mlp": "MLP (similar size)"}
METRICS = ("accuracy", "box_iou", "hit")
NAMES = {"accuracy": "class accuracy", "box_iou": "box IoU", "hit": "right class and IoU ≥ 0.5"}
# A localiser must clear a constant guess by a margin one would call "can", not "slightly": 10 points of class
# accuracy and of box IoU.
_RULE_LOCALISES = stats.Rule("test class accuracy and mean test box IoU, CNN minus the trivial prediction (most "
                             "frequent class, mean training box), as fractions; seed spread plus the test set's paired "
                             "sampling error", "greater", 0.10)
# "Better" is a direction; 1 point is the smallest gain detection papers report as one.
_RULE_BEATS_MLP = stats.Rule("test class accuracy, box IoU and right-class-and-IoU >= 0.5, CNN minus an MLP of "
                             "matched parameter count (as fractions), paired by seed and by test canvas",
                             "greater", 0.01)


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = experiments.new_config(quick)
  c.data = data.get_config()       # source of the digits (mnist5k: real MNIST)
  c.canvas = canvas.get_config(quick)   # canvas size, stroke threshold, canvas counts (one digit per canvas here)
  c.train = train.get_config()
  c.train.loss = "class_and_box"
  c.train.steps = 1000
  c.train.batch_size = 32
  c.train.learning_rate = 2e-3     # serves both models when lr_grid is empty
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.conv_features = (16, 32, 32)   # CNN channels per conv stage (each: 3x3 conv, ReLU, 2x2 max pool)
  c.hidden = (32,)                 # CNN dense widths between the conv stack and the head
  c.lr_grid = (1e-3, 3e-3, 1e-2)   # rates tried per model (seed_base, validation canvases); () uses train.learning_rate
  c.val_canvases = 500             # training canvases held out to choose the rate (the rest train the candidates)
  c.tuning_seeds = 3               # tuning trainings per (model, rate), seeds seed_base..: tuning.choose
  c.seeds = 10                     # seeds per model (init and batch order)
  c.seed_base = 0                  # first seed: this run uses seeds seed_base .. seed_base + seeds - 1 (another base
                                   # draws a disjoint set)
  c.timing_steps = 10              # train steps timed per model (after compile) for the median step time
  c.figure_canvases = 8            # test canvases shown in the figure
  if quick:
    c.data.name = "digits"         # real 8x8 digits on 16x16 canvases
    c.train.steps = 150
    c.train.log_every = 50
    c.train.checkpoint_every = 150
    c.train.eval_batch_size = 100
    c.train.tensorboard = False
    c.conv_features = (8, 16)
    c.hidden = (16,)
    c.seeds = 2
    c.lr_grid, c.val_canvases, c.tuning_seeds = (), 100, 1
    c.timing_steps = 3
    c.figure_canvases = 4
  return c


def validate_config(config: ml_collections.ConfigDict) -> None:
  """One-line UserErrors for impossible settings."""
  if config.seeds < 1 or config.seed_base < 0:
    raise UserError(f"localisation needs seeds >= 1 and seed_base >= 0, got {config.seeds}, {config.seed_base}")
  if any(not 0 < lr < 1 for lr in config.lr_grid) or not 0 < config.val_canvases < config.canvas.n_train:
    raise UserError(f"need rates in (0, 1), 0 < val_canvases < canvas.n_train: {tuple(config.lr_grid)}, "
                    f"{config.val_canvases}")
  if config.lr_grid:
    tuning.check_grid(config.lr_grid, config.tuning_seeds)
  if config.train.loss != "class_and_box":
    raise UserError("localisation trains class + box: train.loss must be 'class_and_box'")


def matched_mlp_width(target_params: int, inputs: int, outputs: int) -> int:
  """Hidden width h of a one-hidden-layer MLP (inputs -> h -> outputs) with about `target_params` parameters."""
  return max(1, round((target_params - outputs) / (inputs + 1 + outputs)))


def build_models(config: ml_collections.ConfigDict, example_shape: tuple[int, ...], num_classes: int) -> dict:
  if not config.conv_features:
    raise UserError("localisation needs at least one conv stage (conv_features) for its CNN")
  cnn = models.create("localiser", conv_features=tuple(config.conv_features), hidden=tuple(config.hidden),
                      num_classes=num_classes)
  cnn_params = analysis.count_params(analysis.abstract_variables(cnn, (1, *example_shape))["params"])
  width = matched_mlp_width(cnn_params, int(np.prod(example_shape)), num_classes + losses.BOX_COORDS)
  return {"cnn": cnn, "mlp": models.create("localiser", conv_features=(), hidden=(width,), num_classes=num_classes)}


def per_example(outputs: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
  """Each metric of METRICS per example (their means are the scores)."""
  values = losses.class_and_box(outputs, y)
  return {k: np.asarray(values[k], np.float32) for k in METRICS}


def trivial_baseline(ds: data.Dataset) -> tuple[dict, dict]:
  """Scores, and per-example values, of predicting the most frequent training class and the mean training box for
  every test digit."""
  label = np.bincount(ds.y_train[:, 0]).argmax()
  box = np.broadcast_to(ds.y_train[:, 1:].mean(0), ds.y_test[:, 1:].shape)
  logits = np.eye(ds.num_classes, dtype=np.float32)[np.full(len(ds.y_test), label)]
  values = per_example(np.concatenate([logits, box.astype(np.float32)], axis=1), ds.y_test)
  return {k: float(v.mean()) for k, v in values.items()}, values


def tune_learning_rates(config: ml_collections.ConfigDict, ds: data.Dataset, nets: dict, workdir: str) -> dict:
  """Per model: each rate of lr_grid's mean share of right class and IoU >= 0.5 on the first `val_canvases`
  training canvases over `tuning_seeds` trainings on the rest (seeds seed_base, ...; never the test canvases),
  and the rate `tuning.choose` takes: the highest mean minus one standard error."""
  if not config.lr_grid:
    return {m: {"learning_rate": config.train.learning_rate, "grid": [], "val_hit": []} for m in nets}
  n = config.val_canvases
  val = canvas.held_out(ds, n)
  score = lambda state, d: {"score": float(per_example(  # noqa: E731
      inference.outputs(state, d.x_test, config.train.eval_batch_size), d.y_test)["hit"].mean())}
  grid = sorted(config.lr_grid)
  scores = tuning.validation_scores(workdir, config.train, nets, val, grid, config.tuning_seeds, config.seed_base,
                                    config.train.progress, lambda m, lr, seed: f"{m}_lr{lr:g}_s{seed}", score)
  out = {}
  for m, per_rate in scores.items():
    chosen, se = tuning.choose(per_rate, n)  # a share of the n validation canvases
    out[m] = {"learning_rate": chosen, "grid": grid, "val_hit": [float(np.mean(h)) for h in per_rate.values()],
              "val_hit_seeds": list(per_rate.values()), "standard_error": se}
  return out


def measure(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict, tuple]:
  """Per-seed test scores and parameters of CNN and MLP, the trivial baseline's scores, step times.

  Also returns (dataset, the first seed's outputs on the figure's canvases per model) for the figure.
  """
  ds = canvas.localisation_dataset(config.data, config.canvas)
  nets = build_models(config, ds.example_shape, ds.num_classes)
  rates = tune_learning_rates(config, ds, nets, workdir)

  def measured(first, state, ds):  # popped from the records below; the first seed also keeps the figure's canvases
    out = inference.outputs(state, ds.x_test, config.train.eval_batch_size)
    values = {"per_example": per_example(out, ds.y_test)}
    return {**values, "examples": out[:config.figure_canvases]} if first else values

  seeds = range(config.seed_base, config.seed_base + config.seeds)
  records = sweep.run_trials(workdir, [sweep.Trial(f"{name}_s{seed}", net, ds, seed,
                                                   tuning.with_rate(config.train, rates[name]["learning_rate"]),
                                                   {"model": name},
                                                   after_fit=functools.partial(measured, seed == seeds[0]))
                                       for seed in seeds for name, net in nets.items()],
                             progress=config.train.progress)
  examples = {r["model"]: r.pop("examples") for r in records if "examples" in r}
  trivial, trivial_values = trivial_baseline(ds)
  values = {**{(r["model"], r["seed"]): r.pop("per_example") for r in records},
            **{("trivial", s): trivial_values for s in seeds}}
  # The test set's sampling variance of each paired difference (CNN minus MLP or trivial), averaged over seeds.
  test_var = {k: {f"cnn|{b}": float(np.mean([sampling.paired_mean_var(values[("cnn", s)][k], values[(b, s)][k])
                                             for s in seeds])) for b in ("mlp", "trivial")} for k in METRICS}
  step_seconds = {m: timing.median_step_seconds(config.train, net, ds, config.timing_steps) for m, net in nets.items()}
  per_model = lambda metric: {m: v for (m,), v in sweep.group(records, ("model",), metric).items()}  # noqa: E731
  params = {m: int(p[0]) for m, p in per_model("params").items()}
  results = {"dataset": ds.name, "n_train": len(ds.y_train), "n_test": len(ds.y_test), "trivial": trivial,
             "tuning": rates,
             "scores": {f"{m}/{k}": v for k in METRICS for m, v in per_model(f"test_{k}").items()},
             "train_scores": {f"{m}/{k}": v for k in METRICS for m, v in per_model(f"train_{k}").items()},
             "test_var": test_var,
             "params": params, "step_seconds": step_seconds, "records": records}
  return results, (ds, examples)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Measures, writes results.json, results.md and the figure to `workdir`; returns the measurements."""
  start = time.time()
  results, (ds, examples) = measure(config, workdir)
  results["smoke_test"] = config.smoke_test
  _plot(workdir, ds, examples, config)
  results["run_seconds"] = time.time() - start
  md = render(results, config)
  return reporting.publish(workdir, results, md)


def render(results: dict, config: ml_collections.ConfigDict) -> str:
  """results.md: train and test scores of the trivial prediction, CNN and MLP, and the verdicts of CLAIMS."""
  r, t = results, results["trivial"]
  rows = [["most frequent class + mean box (trivial)", "", 0] + [x for k in METRICS for x in ("", f"{100 * t[k]:.1f}")]
          + [""]]
  for m in r["params"]:
    t = r["tuning"][m]
    tried = ", ".join(f"{lr:g}: {100 * h:.1f}" for lr, h in zip(t["grid"], t["val_hit"]))
    scores = [reporting.fmt_mean_std(r[s][f"{m}/{k}"], 100) for k in METRICS for s in ("train_scores", "scores")]
    rows.append([LABELS[m], f"{t['learning_rate']:g}" + (f" ({tried})" if tried else ""), r["params"][m], *scores,
                 f"{1000 * r['step_seconds'][m]:.1f}"])
  md = [f"# Single-digit localisation: class + box (`{r['dataset']}`)\n\n",
        f"{r['n_train']:,} train / {r['n_test']:,} test canvases of {config.canvas.size}x{config.canvas.size} px, "
        f"one real digit each. {config.seeds} seed(s) from {config.seed_base}, {config.train.steps} Adam steps of "
        f"batch {config.train.batch_size} at each model's rate, loss cross-entropy + (1 - GIoU); numbers in %, mean "
        "± std over seeds, on the training canvases and on the test canvases.\n\n",
        reporting.markdown_table(["model", "learning rate (validation right class and IoU ≥ 0.5, % per rate tried)",
                                  "params"] + [f"{NAMES[k]} ({s})" for k in METRICS for s in ("train", "test")]
                                 + ["ms / train step"], rows),
        "\nThe MLP's hidden width is chosen to match the CNN's parameter count. "
        + (f"Learning rate: the rate with the highest mean share of right class and IoU ≥ 0.5 on "
           f"{config.val_canvases} held-out training canvases over {config.tuning_seeds} tuning seeds (from seed "
           f"{config.seed_base}, trained on the others) minus one standard error. " if config.lr_grid else
           "Learning rate: train.learning_rate for both (no grid). ")
        + f"Step time: median of "
        f"{config.timing_steps} compiled steps on this machine (it depends on the load; compare within a run). "
        "A comparison's interval adds the test set's sampling variance of the paired difference (var over the test "
        "canvases of the per-canvas difference / n) to the spread over seeds.\n\n",
        tables.verdicts_section(CLAIMS, r),
        f"\nRun time of this invocation {r['run_seconds']:.0f} s (finished trainings in the workdir are loaded, "
        "not re-run).\n\n![predictions](predictions.png)\n"]
  return "".join(md)


def _plot(workdir, ds, examples, config) -> None:
  import matplotlib.patches as patches  # pylint: disable=g-import-not-at-top
  n = config.figure_canvases
  fig, axes = reporting.new_figure(1, n, figsize=(1.8 * n, 2.2), squeeze=False)
  colours = {"truth": "lime", "cnn": "red", "mlp": "deepskyblue"}
  k = ds.num_classes
  for j in range(n):
    ax = axes[0, j]
    ax.imshow(ds.x_test[j, ..., 0], cmap="gray", vmin=0, vmax=1)
    found = {"truth": (int(ds.y_test[j, 0]), ds.y_test[j, 1:])}
    found.update({m: (int(out[j, :k].argmax()), out[j, k:]) for m, out in examples.items()})
    for name, (label, (top, left, bottom, right)) in found.items():
      ax.add_patch(patches.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                                     edgecolor=colours[name], linewidth=1.2))
    ax.set_title("  ".join(f"{label}" for label, _ in found.values()), fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle("boxes and classes: truth (green), CNN (red), MLP (blue)", fontsize=8)
  reporting.save_figure(fig, workdir, "predictions")


def _figure(results: dict, model: str) -> str:
  return "/".join(f"{100 * np.mean(results['scores'][f'{model}/{k}']):.1f}" for k in METRICS)


def _judge_localises(results: dict) -> ledger.Finding:
  scores, trivial = results["scores"], results["trivial"]
  comparisons = [(f"{NAMES[k]} CNN − trivial", stats.with_fixed_variance(
      stats.paired(scores[f"cnn/{k}"], [trivial[k]] * len(scores[f"cnn/{k}"])), results["test_var"][k]["cnn|trivial"]))
      for k in ("accuracy", "box_iou")]
  verdict, effects = stats.judge(_RULE_LOCALISES, comparisons, scale=100, unit=" pts")
  trivial_text = "/".join(f"{100 * trivial[k]:.1f}" for k in METRICS)
  return ledger.Finding(f"class accuracy / box IoU / right class and IoU >= 0.5 (%): CNN {_figure(results, 'cnn')} vs "
                        f"trivial {trivial_text}; {effects}", verdict)


def _judge_beats_mlp(results: dict) -> ledger.Finding:
  scores = results["scores"]
  comparisons = [(f"{NAMES[k]} CNN − MLP", stats.with_fixed_variance(
      stats.paired(scores[f"cnn/{k}"], scores[f"mlp/{k}"]), results["test_var"][k]["cnn|mlp"])) for k in METRICS]
  verdict, effects = stats.judge(_RULE_BEATS_MLP, comparisons, scale=100, unit=" pts")
  return ledger.Finding(f"class accuracy / box IoU / right class and IoU >= 0.5 (%): CNN {_figure(results, 'cnn')} "
                        f"({results['params']['cnn']:,} params) vs MLP {_figure(results, 'mlp')} "
                        f"({results['params']['mlp']:,}); {effects}", verdict)


CLAIMS = [
    ledger.Claim("cnn_localisation", "CNNs also do object detection: they can output where an object is (a box) as "
                 "well as what it is.", "CNN explainers",
                 "single real digit on a canvas, 10 seeds: test class accuracy and mean box IoU of the CNN minus the "
                 "trivial prediction's (most frequent class, mean box); supported if both lower 95 % bounds (Holm) "
                 "clear 10 points", _judge_localises, rule=_RULE_LOCALISES),
    ledger.Claim("cnn_localises_better_than_mlp", "A CNN localises and classifies an object better than a "
                 "fully-connected net of similar size.", "CNN explainers (translation equivariance, locality)",
                 "test class accuracy, box IoU and right-class-and-IoU >= 0.5 of a CNN minus an MLP with matched "
                 "parameter count, paired by seed (10 seeds), test-set sampling error added; supported if every "
                 "lower 95 % bound (Holm) clears 1 point", _judge_beats_mlp, rule=_RULE_BEATS_MLP),
]
