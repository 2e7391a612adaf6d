"""CNNs also localise: a small CNN finds the class and box of a real digit on a canvas, far better than a same-size MLP.

Single-object detection on canvases of one real MNIST digit (`cnnlab.data.canvas`: mnist5k shrunk to 14x14,
pasted at a random position on 32x32); the target is the class and the box of the digit's strokes. A
CNN (3x3 conv + max pool stages, a dense layer, a class + box head) against an MLP whose hidden width is
chosen to give it about the CNN's parameter count; both trained with cross-entropy + (1 - GIoU)
(`train.loss = "class_and_box"`), 6 trainings of 1,000 steps. Measured: classification accuracy, mean box
IoU, the share of digits both classified and localised (IoU >= 0.5, PASCAL VOC's criterion), the trivial
prediction's scores (the most frequent class and the mean training box) and step times; the CLAIMS judges
give the verdicts.

Command:  python run.py --exp=localisation
Result:   see REPORT.md (ledger) and the run's results.md.
"""

import time

import ml_collections
import numpy as np

import experiments
from cnnlab import data, models
from cnnlab.data import canvas
from cnnlab.metrics import boxes
from cnnlab.ops import analysis
from cnnlab.report import ledger, rendering as reporting, tables, verdicts
from cnnlab.training import inference, losses, sweep, timing, train
from cnnlab.errors import UserError

LABELS = {"cnn": "CNN", "mlp": "MLP (similar size)"}
METRICS = ("accuracy", "box_iou", "hit")


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = experiments.new_config(quick)
  c.data = data.get_config()       # source of the digits (mnist5k: real MNIST)
  c.canvas = canvas.get_config(quick)   # canvas size, stroke threshold, canvas counts (one digit per canvas here)
  c.train = train.get_config()
  c.train.loss = "class_and_box"
  c.train.steps = 1000
  c.train.batch_size = 32
  c.train.learning_rate = 2e-3
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.conv_features = (16, 32, 32)   # CNN channels per conv stage (each: 3x3 conv, ReLU, 2x2 max pool)
  c.hidden = (32,)                 # CNN dense widths between the conv stack and the head
  c.seeds = 3                      # seeds per model (init and batch order)
  c.timing_steps = 10              # train steps timed per model (after compile) for the median step time
  c.far_factor = 2.0               # "far above the trivial baseline": box IoU at least this many times the baseline's
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
    c.seeds = 1
    c.timing_steps = 3
    c.far_factor = 1.2
    c.figure_canvases = 4
  return c


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


def trivial_baseline(ds: data.Dataset) -> dict:
  """Scores of predicting the most frequent training class and the mean training box for every test digit."""
  label = np.bincount(ds.y_train[:, 0]).argmax()
  box = np.broadcast_to(ds.y_train[:, 1:].mean(0), ds.y_test[:, 1:].shape)
  correct = (ds.y_test[:, 0] == label).astype(np.float64)
  iou = np.asarray(boxes.iou(box, ds.y_test[:, 1:]), np.float64)
  return {"accuracy": float(correct.mean()), "box_iou": float(iou.mean()),
          "hit": float((correct * (iou >= 0.5)).mean())}


def measure(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict, tuple]:
  """Per-seed test scores and parameters of CNN and MLP, the trivial baseline's scores, step times.

  Also returns (dataset, seed 0's outputs on the figure's canvases per model) for the figure.
  """
  if config.seeds < 1:
    raise UserError("localisation needs seeds >= 1")
  if config.train.loss != "class_and_box":
    raise UserError("localisation trains class + box: train.loss must be 'class_and_box'")
  ds = canvas.localisation_dataset(config.data, config.canvas)
  nets = build_models(config, ds.example_shape, ds.num_classes)

  def figure_outputs(state, ds):  # seed 0's outputs on the figure's canvases, popped from its record below
    return {"examples": inference.outputs(state, ds.x_test[:config.figure_canvases], config.train.eval_batch_size)}

  records = sweep.run_trials(workdir, [sweep.Trial(f"{name}_s{seed}", net, ds, seed, config.train, {"model": name},
                                                   after_fit=figure_outputs if seed == 0 else None)
                                       for seed in range(config.seeds) for name, net in nets.items()],
                             progress=config.train.progress)
  examples = {r["model"]: r.pop("examples") for r in records if "examples" in r}
  step_seconds = {m: timing.median_step_seconds(config.train, net, ds, config.timing_steps) for m, net in nets.items()}
  scores = {k: sweep.group(records, ("model",), f"test_{k}") for k in METRICS}
  params = {m: int(sweep.group(records, ("model",), "params")[(m,)][0]) for m in nets}
  results = {"dataset": ds.name, "n_train": len(ds.y_train), "n_test": len(ds.y_test), "trivial": trivial_baseline(ds),
             "scores": {f"{m}/{k}": scores[k][(m,)] for m in nets for k in METRICS}, "params": params,
             "step_seconds": step_seconds, "far_factor": config.far_factor, "records": records}
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
  """results.md: scores of the trivial prediction, CNN and MLP, and the verdicts of CLAIMS."""
  r, t = results, results["trivial"]
  rows = [["most frequent class + mean box (trivial)", 0] + [f"{100 * t[k]:.1f}" for k in METRICS] + [""]]
  for m in r["params"]:
    rows.append([LABELS[m], r["params"][m]] + [reporting.fmt_mean_std(r["scores"][f"{m}/{k}"], 100) for k in METRICS]
                + [f"{1000 * r['step_seconds'][m]:.1f}"])
  drop = {k: 100 * (np.mean(r["scores"][f"cnn/{k}"]) - np.mean(r["scores"][f"mlp/{k}"])) for k in METRICS}
  yn = lambda b: "yes" if b else "no"
  md = [f"# Single-digit localisation: class + box (`{r['dataset']}`)\n\n",
        f"{r['n_train']:,} train / {r['n_test']:,} test canvases of {config.canvas.size}x{config.canvas.size} px, "
        f"one real digit each. {config.seeds} seed(s), {config.train.steps} Adam steps of batch "
        f"{config.train.batch_size}, loss cross-entropy + (1 - GIoU); test-set numbers in %, mean ± std over "
        "seeds.\n\n",
        reporting.markdown_table(["model", "params", "class accuracy", "mean box IoU", "class right and IoU ≥ 0.5",
                                  "ms / train step"], rows),
        f"\nThe MLP's hidden width is chosen to match the CNN's parameter count. Step time: median of "
        f"{config.timing_steps} compiled steps on this machine (it depends on the load; compare within a run).\n\n",
        tables.verdicts_section(CLAIMS, r),
        f"\nCNN clearly above the trivial prediction (box IoU also ≥ {config.far_factor:g}x): "
        + ", ".join(f"{k} {yn(ok)}" for k, ok in _above_trivial(r).items()) + ". The MLP loses "
        + ", ".join(f"{drop[k]:.1f} points of {k.replace('_', ' ')}" for k in METRICS) + ".\n",
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


def _above_trivial(results: dict) -> dict[str, bool]:
  """Is the CNN > 2 SE above the trivial prediction on class accuracy, and on box IoU (and by `far_factor`)?"""
  cnn, trivial = (lambda k: results["scores"][f"cnn/{k}"]), results["trivial"]
  return {"accuracy": verdicts.clearly_greater(cnn("accuracy"), [trivial["accuracy"]]),
          "box_iou": verdicts.clearly_greater(cnn("box_iou"), [trivial["box_iou"]])
          and bool(np.mean(cnn("box_iou")) >= results["far_factor"] * trivial["box_iou"])}


def _judge_localises(results: dict) -> ledger.Finding:
  held, total = verdicts.count_true(_above_trivial(results))
  trivial = "/".join(f"{100 * results['trivial'][k]:.1f}" for k in METRICS)
  return ledger.Finding(f"class accuracy / box IoU / right class and IoU >= 0.5 (%): CNN {_figure(results, 'cnn')} vs "
                        f"trivial {trivial}; clearly above on {held}/{total} (box IoU also >= "
                        f"{results['far_factor']:g}x)", verdicts.from_counts(held, total))


def _judge_beats_mlp(results: dict) -> ledger.Finding:
  scores = results["scores"]
  held, total = verdicts.count_true([verdicts.clearly_greater(scores[f"cnn/{k}"], scores[f"mlp/{k}"]) for k in METRICS])
  return ledger.Finding(f"class accuracy / box IoU / right class and IoU >= 0.5 (%): CNN {_figure(results, 'cnn')} "
                        f"({results['params']['cnn']:,} params) vs MLP {_figure(results, 'mlp')} "
                        f"({results['params']['mlp']:,}); CNN clearly ahead on {held}/{total}",
                        verdicts.from_counts(held, total))


CLAIMS = [
    ledger.Claim("cnn_localisation", "CNNs also do object detection: they can output where an object is (a box) as "
                 "well as what it is.", "CNN explainers",
                 "single real digit on a canvas, 3 seeds: class accuracy and mean box IoU vs the trivial prediction "
                 "(most frequent class, mean box); supported if both are > 2 SE above it and the box IoU >= "
                 "`far_factor` (2x)", _judge_localises),
    ledger.Claim("cnn_localises_better_than_mlp", "A CNN localises and classifies an object better than a "
                 "fully-connected net of similar size.", "CNN explainers (translation equivariance, locality)",
                 "class accuracy, box IoU and right-class-and-IoU >= 0.5 of a CNN vs an MLP with matched parameter "
                 "count, 3 seeds; a metric counts when the CNN leads by > 2 SE", _judge_beats_mlp),
]
