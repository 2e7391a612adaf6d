"""CNNs also segment: a fully-convolutional encoder-decoder labels every pixel of real digits, and U-Net skips help.

Canvases of 1-3 real MNIST digits (`cnnlab.data.canvas`: mnist5k shrunk to 14x14, pasted at random on 32x32),
labelled per pixel: background or the class of the digit whose stroke it is (11 classes). Three decoders on one
encoder: stride-2 transposed conv, bilinear resize + conv (Odena et al. 2016; `nearest` is a fourth variant), and a
U-Net (transposed conv + skips), each at its rate of `lr_grid` by mean mIoU over `tuning_seeds` trainings on
canvases held out of the training set (`tuning.choose`), then 10 seeds of 1,000 cosine-decayed steps.
Measured: train and test mIoU, pixel accuracy, digit-vs-background IoU, the train-loss curves, step time, the
all-background prediction's scores, and the period-2 ("checkerboard") share of each net's output at init on a flat
input and trained. The CLAIMS judges compare paired effects with 95% intervals.

Command:  python run.py --exp=segmentation
Result:   see REPORT.md (ledger) and the run's results.md.
"""

import functools
import itertools
import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np

import experiments
from cnnlab import data, kernels, models
from cnnlab.data import canvas
from cnnlab.metrics import segmentation as segmentation_metrics, segmentation_scores, spectral
from cnnlab.report import curves as learning_curves, ledger, rendering as reporting, stats, tables
from cnnlab.training import inference, parallel, state as state_lib, sweep, timing, train
from cnnlab.training import tuning as tuning_lib
from cnnlab.errors import UserError

VARIANTS = {"transposed": dict(upsample="transposed"), "bilinear": dict(upsample="bilinear"),
            "nearest": dict(upsample="nearest"), "unet": dict(upsample="transposed", skips=True)}
LABELS = {"transposed": "transposed conv", "bilinear": "bilinear resize + conv", "nearest": "nearest resize + conv",
          "unet": "U-Net (transposed conv + skips)"}
# 15 mIoU points above all-background: more than perfect stroke masks with chance class labels gain (about +5:
# background IoU 1 and ~1/19 per digit class, over 11 classes), so the pixels' classes must be right too.
_RULE_SEGMENTS = stats.Rule("test mean IoU of each decoder minus all-background's (as fractions); seed spread "
                            "plus the test set's paired sampling error (bootstrap over canvases)", "greater", 0.15)
# "Improve" is a direction; 1 point is the smallest gain segmentation papers report as one.
_RULE_SKIPS = stats.Rule("test mean IoU and digit-vs-background IoU, U-Net minus each decoder without skips (as "
                         "fractions), paired by seed and by test canvas", "greater", 0.01)
# An artefact must be visible: a period-2 pattern with 1 % of a map's power has 10 % of its rms amplitude.
_RULE_CHECKERBOARD = stats.Rule("share of the foreground map's power in period-2 patterns, transposed conv minus "
                                "each resize decoder, at init on a flat input and on trained test predictions, "
                                "paired by seed", "greater", 0.01)


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = experiments.new_config(quick)
  c.data = data.get_config()       # source of the digits (mnist5k: real MNIST)
  c.canvas = canvas.get_config(quick)   # canvas size, digits per canvas, stroke threshold, canvas counts
  c.train = train.get_config()
  # 1,000 steps per training (tuning and seeds; 400 left every decoder's train mIoU at its test mIoU, ~25 %);
  # learning_rate serves every decoder when lr_grid is empty.
  c.train.update(dict(steps=1000, batch_size=32, learning_rate=3e-3, schedule="cosine", grad_clip=1.0, log_every=50,
                      checkpoint_every=500))
  # Rates tried per decoder (seed_base, validation split); () uses train.learning_rate. At (1e-3, 3e-3, 1e-2) both
  # no-skip decoders chose the top rate on both seed sets.
  c.lr_grid = (1e-3, 3e-3, 1e-2, 3e-2)
  c.val_canvases = 500             # training canvases held out to choose the rate (the rest train the candidates)
  c.tuning_seeds = 3               # tuning trainings per (decoder, rate), seeds seed_base..: tuning.choose
  c.variants = ("transposed", "bilinear", "unet")  # decoders compared (keys of VARIANTS; 'nearest' also works)
  c.features = (16, 32, 64)        # encoder channels per stage (the decoder mirrors them)
  # Leaky-ReLU slope of every 3x3 conv, all decoders alike (0: ReLU). With ReLU the U-Net's deep path died in 2 of
  # seeds 0-9 and in every tuning run of seed 1000 (train loss flat at 0.155 from step ~150; docs/report.md).
  c.negative_slope = 0.1
  c.up_kernel = 3                  # transposed-conv kernel (3 with stride 2: Odena et al.'s uneven-overlap case)
  c.seeds = 10                     # seeds per variant (init and batch order)
  c.seed_base = 0                  # first seed: seeds seed_base .. seed_base + seeds - 1 (another base: disjoint)
  c.timing_steps = 10              # train steps timed per variant (after compile) for the median step time
  c.figure_canvases = 6            # test canvases shown in the predictions figure
  if quick:  # real 8x8 digits on 16x16 canvases, one rate (no tuning)
    c.data.name, c.canvas.max_digits, c.features, c.lr_grid, c.val_canvases = "digits", 2, (8, 16), (), 100
    c.tuning_seeds = 1
    c.train.update(dict(steps=150, learning_rate=1e-2, schedule="constant", log_every=50, checkpoint_every=150,
                        eval_batch_size=100, tensorboard=False))
    c.seeds, c.timing_steps, c.figure_canvases = 2, 3, 3
  return c


def validate_config(config: ml_collections.ConfigDict) -> None:
  """One-line UserErrors for impossible settings."""
  if config.seeds < 1 or config.seed_base < 0:
    raise UserError(f"segmentation needs seeds >= 1 and seed_base >= 0, got {config.seeds}, {config.seed_base}")
  if any(not 0 < lr < 1 for lr in config.lr_grid) or not 0 < config.val_canvases < config.canvas.n_train:
    raise UserError(f"need rates in (0, 1), 0 < val_canvases < canvas.n_train: {config.lr_grid}, {config.val_canvases}")
  if config.lr_grid:
    tuning_lib.check_grid(config.lr_grid, config.tuning_seeds)
  if not 0 <= config.negative_slope < 1:
    raise UserError(f"segmentation needs 0 <= negative_slope < 1, got {config.negative_slope}")


def build_models(config: ml_collections.ConfigDict, num_classes: int) -> dict:
  unknown = set(config.variants) - set(VARIANTS)
  if unknown or not config.variants:
    raise UserError(f"unknown segmentation variants {sorted(unknown)}; use some of {list(VARIANTS)}")
  slope = config.negative_slope
  activation = functools.partial(nn.leaky_relu, negative_slope=slope) if slope else nn.relu
  return {v: models.create("segnet", features=tuple(config.features), up_kernel=config.up_kernel,
                           num_classes=num_classes, activation=activation, **VARIANTS[v]) for v in config.variants}


def init_checkerboard(config: ml_collections.ConfigDict, net, shape: tuple[int, ...], seed: int) -> float:
  """Checkerboard share of a freshly initialised net's foreground map on a constant grey input."""
  net = kernels.specialise(net, config.train.kernels)  # as fit does: its jitted init and forward are reused
  state = state_lib.create_train_state(net, state_lib.make_optimizer(config.train), jax.random.key(seed), shape,
                                   parallel.make_mesh())
  logits = inference.outputs(state, np.full((1, *shape), 0.5, np.float32), config.train.eval_batch_size)
  return float(spectral.checkerboard_shares(segmentation_scores.foreground_probability(logits))[0])


def tune_learning_rates(config: ml_collections.ConfigDict, ds, nets: dict, workdir: str) -> dict:
  """Per decoder: each rate of lr_grid's mean mIoU on the validation canvases over `tuning_seeds` trainings
  (seeds seed_base, ...), and the rate `tuning.choose` takes: the highest mean minus one standard error (the
  seeds' spread; mIoU is no share of examples)."""
  if not config.lr_grid:
    return {v: {"learning_rate": config.train.learning_rate, "grid": [], "val_miou": []} for v in nets}
  n = config.val_canvases
  val = canvas.held_out(ds, n)
  score = lambda state, d: {"score": segmentation_scores.evaluate(  # noqa: E731
      inference.outputs(state, d.x_test, config.train.eval_batch_size), d.y_test)["miou"]}
  scores = tuning_lib.validation_scores(workdir, config.train, nets, val, config.lr_grid, config.tuning_seeds,
                                        config.seed_base, config.train.progress,
                                        lambda v, lr, seed: f"{v}_lr{lr:g}_s{seed}", score)
  out = {}
  for v, per_rate in scores.items():
    chosen, se = tuning_lib.choose(per_rate, None)  # mIoU is no share of examples: the seeds' spread alone
    out[v] = {"learning_rate": chosen, "grid": list(config.lr_grid),
              "val_miou": [float(np.mean(m)) for m in per_rate.values()], "val_miou_seeds": list(per_rate.values()),
              "standard_error": se}
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Tunes, trains and scores every decoder; writes results.json, results.md and the figure to `workdir`."""
  start = time.time()
  ds = canvas.segmentation_dataset(config.data, config.canvas)
  nets = build_models(config, ds.num_classes)
  tuning = tune_learning_rates(config, ds, nets, workdir)
  trivial = segmentation_scores.evaluate(np.eye(ds.num_classes, dtype=np.float32)[np.zeros_like(ds.y_test)] * 10.0,
                                  ds.y_test)  # every pixel "background" with certainty
  seeds = range(config.seed_base, config.seed_base + config.seeds)
  parts = dict.fromkeys((("trivial", seed) for seed in seeds), trivial.pop("parts"))  # per-image parts of each arm

  def scores(net, seed, state, ds):  # the first seed also keeps the figure's canvases, popped from its record below
    logits = inference.outputs(state, ds.x_test, config.train.eval_batch_size)
    n = len(ds.x_test)  # as many training canvases as test canvases: the train mIoU of a sample of the training set
    train_logits = inference.outputs(state, ds.x_train[:n], config.train.eval_batch_size)
    out = {**segmentation_scores.evaluate(logits, ds.y_test),
           "train_miou": segmentation_metrics.mean_iou(segmentation_metrics.confusion_matrix(
               ds.y_train[:n], train_logits.argmax(-1), ds.num_classes)),
           "init_checkerboard": init_checkerboard(config, net, ds.example_shape, seed)}
    if seed == seeds[0]:
      shown = logits[:config.figure_canvases]
      out["examples"] = (shown.argmax(-1), segmentation_scores.foreground_probability(shown))
    return out

  records = sweep.run_trials(workdir, [sweep.Trial(f"{v}_s{seed}", net, ds, seed,
                                                   tuning_lib.with_rate(config.train, tuning[v]["learning_rate"]),
                                                   {"variant": v}, after_fit=functools.partial(scores, net, seed))
                                       for seed in seeds for v, net in nets.items()],
                             progress=config.train.progress)
  examples = {r["variant"]: r.pop("examples") for r in records if "examples" in r}
  parts.update({(r["variant"], r["seed"]): r.pop("parts") for r in records})
  test_var = {m: {f"{a}|{b}": float(np.mean([fn(parts[(a, s)][m], parts[(b, s)][m]) for s in seeds]))
                  for a, b in itertools.combinations([*nets, "trivial"], 2)}
                 for m, fn in segmentation_scores.PAIRED_VAR.items()}
  curves = learning_curves.train_loss(workdir, {v: [f"{v}_s{seed}" for seed in seeds] for v in nets})
  step_seconds = {v: timing.median_step_seconds(config.train, net, ds, config.timing_steps) for v, net in nets.items()}
  per_variant = lambda m: {v: sweep.group(records, ("variant",), m)[(v,)] for v in nets}  # noqa: E731
  results = {"dataset": ds.name, "num_classes": ds.num_classes, "n_train": len(ds.y_train), "n_test": len(ds.y_test),
             "trivial": trivial, "tuning": tuning, "test_var": test_var,
             **{m: per_variant(m) for m in ("miou", "train_miou", "pixel_accuracy", "foreground_iou", "checkerboard",
                                            "init_checkerboard")},
             "params": {v: int(p[0]) for v, p in per_variant("params").items()}, "step_seconds": step_seconds,
             "train_loss_curves": curves, "records": records, "smoke_test": config.smoke_test}
  _plot(workdir, ds, examples, config)
  learning_curves.plot(workdir, "learning_curves", curves, LABELS)
  results["run_seconds"] = time.time() - start
  return reporting.publish(workdir, results, render(results, config))


def _activation_words(slope: float) -> str:
  return f"leaky ReLU (slope {slope:g})" if slope else "ReLU"


def render(r: dict, config: ml_collections.ConfigDict) -> str:
  """results.md of results `r`: train and test scores per decoder against all-background, the verdicts of CLAIMS."""
  f = lambda values: reporting.fmt_mean_std(values, 100)  # noqa: E731
  rows = [["all background (trivial)", "", 0, "", f"{100 * r['trivial']['miou']:.1f}",
           f"{100 * r['trivial']['pixel_accuracy']:.1f}", "0.0", "", "", ""]]
  for v in r["miou"]:
    t = r["tuning"][v]
    tried = ", ".join(f"{lr:g}: {100 * m:.1f}" for lr, m in zip(t["grid"], t["val_miou"]))
    rows.append([LABELS[v], f"{t['learning_rate']:g}" + (f" ({tried})" if tried else ""), r["params"][v],
                 f(r["train_miou"][v]), f(r["miou"][v]), f(r["pixel_accuracy"][v]), f(r["foreground_iou"][v]),
                 f"{1000 * r['step_seconds'][v]:.0f}", reporting.fmt_mean_std(r["init_checkerboard"][v], 1, 3),
                 reporting.fmt_mean_std(r["checkerboard"][v], 1, 3)])
  md = [f"# Segmentation of real digits on canvases (`{r['dataset']}`)\n\n",
        f"{r['n_train']:,} train / {r['n_test']:,} test canvases of {config.canvas.size}x{config.canvas.size} px, "
        f"{config.canvas.min_digits}-{config.canvas.max_digits} digits each, {r['num_classes']} classes (background + "
        f"digits). {config.seeds} seed(s) from {config.seed_base}, {config.train.steps} Adam steps of batch "
        f"{config.train.batch_size} at each decoder's rate; encoder {tuple(config.features)}, "
        f"{_activation_words(config.negative_slope)} after every 3x3 conv; numbers in %, mean ± std over seeds.\n\n",
        reporting.markdown_table(["decoder", "learning rate (validation mIoU % per rate tried)", "params",
                                  "mean IoU (train)", "mean IoU (test)", "pixel acc. (test)", "digit-vs-bg IoU (test)",
                                  "ms / train step", "checkerboard at init", "checkerboard trained"], rows),
        "\nMean IoU: per-class TP / (TP + FP + FN) averaged over the classes present (train: on as many training "
        f"canvases as test canvases). Learning rate (mean validation mIoU per rate in brackets): the rate with the "
        f"highest mean mIoU on {config.val_canvases} held-out training canvases over {config.tuning_seeds} tuning "
        f"seeds (from seed {config.seed_base}) minus one standard error of that mean. Step time: median of "
        f"{config.timing_steps} compiled steps (load-dependent). Checkerboard: share of the foreground map's power "
        "in period-2 patterns, at init on a flat grey input and on trained test predictions. Intervals add each "
        "paired difference's test-set sampling variance (bootstrap over the test canvases, drawn once for both "
        "arms) to the spread over seeds.\n\n",
        f"Train loss (cross-entropy per pixel, logged batches, mean ± std over seeds; {config.train.schedule} "
        "schedule): where it stops falling, the decoder has reached its plateau at this budget.\n\n",
        reporting.markdown_table(*learning_curves.plateau_rows(r["train_loss_curves"], LABELS, "decoder")),
        "\n![learning curves](learning_curves.png)\n\n",
        tables.verdicts_section(CLAIMS, r),
        f"\nAll-background scores {100 * r['trivial']['pixel_accuracy']:.1f} % pixel accuracy: pixel accuracy alone "
        "says little. The U-Net's decoder convs also see the skip channels (more parameters).\n",
        f"\nRun time {r['run_seconds']:.0f} s (finished trainings in the workdir are loaded, not re-run)."
        "\n\n![predictions](predictions.png)\n"]
  return "".join(md)


def _plot(workdir, ds, examples, config) -> None:
  n = config.figure_canvases
  variants = list(examples)
  fig, axes = reporting.new_figure(2 + 2 * len(variants), n, figsize=(1.6 * n, 1.6 * (2 + 2 * len(variants))),
                                   squeeze=False)
  k = ds.num_classes
  rows = [("input", ds.x_test[:n, ..., 0], "gray", 1.0), ("truth", ds.y_test[:n], "tab20", k - 1)]
  for v in variants:
    rows += [(LABELS[v], examples[v][0], "tab20", k - 1), ("P(digit)", examples[v][1], "magma", 1.0)]
  for i, (name, maps, cmap, vmax) in enumerate(rows):
    for j in range(n):
      ax = axes[i, j]
      ax.imshow(maps[j], cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
      ax.set(xticks=[], yticks=[])
      if j == 0:
        ax.set_ylabel(name, fontsize=6)
  reporting.save_figure(fig, workdir, "predictions")


def _effect(r: dict, metric: str, a: str, b: str) -> stats.Effect:
  """`metric` of decoder a minus b ('trivial': all-background), paired by seed, plus the test set's paired
  sampling variance (none for the flat input at init)."""
  x = r[metric][a]
  y = [r["trivial"][metric]] * len(x) if b == "trivial" else r[metric][b]
  var = r["test_var"].get(metric, {})
  return stats.with_fixed_variance(stats.paired(x, y), var.get(f"{a}|{b}", var.get(f"{b}|{a}", 0.0)))


def _means(r: dict, metric: str, variants, scale: float = 100, digits: int = 1) -> str:
  return ", ".join(f"{v} {scale * np.mean(r[metric][v]):.{digits}f}" for v in variants)


def _judge_segments(r: dict) -> ledger.Finding:
  verdict, effects = stats.judge(_RULE_SEGMENTS, [(f"{v} − all-background", _effect(r, "miou", v, "trivial"))
                                                  for v in r["miou"]], scale=100, unit=" pts")
  return ledger.Finding(f"test mIoU % {_means(r, 'miou', r['miou'])} vs all-background "
                        f"{100 * r['trivial']['miou']:.1f}; {effects}", verdict)


def _judge_skips(r: dict) -> ledger.Finding:
  others, names = [v for v in r["miou"] if v != "unet"], {"miou": "mIoU", "foreground_iou": "digit-vs-bg IoU"}
  verdict, effects = stats.judge(_RULE_SKIPS, [(f"{names[m]} U-Net − {v}", _effect(r, m, "unet", v))
                                               for m in names for v in others], scale=100, unit=" pts")
  figure = "; ".join(f"{names[m]} (%) {_means(r, m, ['unet'] + others)}" for m in names)
  return ledger.Finding(f"{figure}; {effects}", verdict)


def _judge_checkerboard(r: dict) -> ledger.Finding:
  resize, when = [v for v in ("bilinear", "nearest") if v in r["miou"]], {"init_checkerboard": "init",
                                                                           "checkerboard": "trained"}
  verdict, effects = stats.judge(_RULE_CHECKERBOARD, [(f"{w}: transposed − {v}", _effect(r, m, "transposed", v))
                                                      for m, w in when.items() for v in resize],
                                 scale=100, unit=" % of power", digits=2)
  figure = "; ".join(f"{w} {_means(r, m, ['transposed'] + resize, 1, 3)}" for m, w in when.items())
  return ledger.Finding(f"period-2 power share {figure}; {effects}", verdict)


CLAIMS = [
    ledger.Claim("cnn_segmentation", "CNNs do more than classify: a fully-convolutional encoder-decoder labels every "
                 "pixel (semantic segmentation).", "CNN explainers; Long et al. 2015",
                 "test mean IoU (11 classes) on canvases of real digits, 10 seeds, each decoder at its validated rate; "
                 "supported if every decoder's lower 95 % bound (Holm) clears all-background by 15 points",
                 _judge_segments, rule=_RULE_SEGMENTS),
    ledger.Claim("unet_skips_help", "Skip connections from the encoder (U-Net) improve segmentation over a decoder "
                 "without them.", "Ronneberger et al. 2015",
                 "test mIoU and digit-vs-background IoU, U-Net minus each no-skip decoder (each at its validated "
                 "rate), paired by seed (10 seeds) with the test set's paired sampling error; supported if every "
                 "lower 95 % bound (Holm) clears 1 point", _judge_skips, rule=_RULE_SKIPS),
    ledger.Claim("transposed_conv_checkerboard", "Transposed convolutions used for upsampling produce checkerboard "
                 "artefacts that resize + conv avoids.", "Odena, Dumoulin & Olah 2016 (Distill)",
                 "share of output power in period-2 patterns, transposed conv minus each resize decoder, at init on a "
                 "flat input and on trained predictions, paired by seed (10 seeds); supported if every lower 95 % "
                 "bound (Holm) clears 1 % of the power (a visible artefact)", _judge_checkerboard,
                 rule=_RULE_CHECKERBOARD),
]
