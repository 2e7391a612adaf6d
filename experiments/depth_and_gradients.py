"""CNNs prevent vanishing/exploding gradients (by having fewer parameters)?

Per-block gradient norms of the blocks' weights (kernels only: zero-initialised biases and BatchNorm parameters
are left out) at initialisation and after training, plus the final train loss and accuracy, for deep MLPs and
deep CNNs (`cnnlab.models.deep`: stem -> `depth` blocks -> head) with and without BatchNorm and residual
connections, on real 8x8 digits. The MLP's width is 9x the CNN's channels, so a unit of either sees the same
fan-in (72 inputs). The initialiser is a factor at initialisation: LeCun (flax's default), He, and orthogonal
(delta-orthogonal for the CNN, Xiao et al. 2018); the trained nets (`train_inits`, 10 seeds: 80 trainings of 1,000
cosine-decayed steps) use LeCun, each at its own Adam rate chosen on a validation split of the training set, so
that whether a deep net trains at all does not hinge on one shared rate. The spread of a net is log10 of block
1's over block L's weight-gradient norm (0: balanced; negative: vanishing towards the input; positive:
exploding). The CLAIMS judge tests, paired by seed and per
initialiser, that the plain CNN's |spread| at the deepest depth is more than a decade smaller than the plain MLP's.

Command:  python run.py --exp=depth_and_gradients
Result:   see REPORT.md (ledger) and the run's results.md.
"""

import functools
import os

import jax
import ml_collections
import numpy as np

import experiments
from cnnlab import data, kernels, models
from cnnlab.errors import UserError
from cnnlab.metrics import gradients
from cnnlab.models import deep
from cnnlab.report import ledger, rates as rates_text, rendering as reporting, stats, tables
from cnnlab.training import metric_writer, parallel, state as state_lib, sweep, train, tuning

VARIANTS = {"plain": ("none", False), "batchnorm": ("batch", False), "residual": ("none", True),
            "bn+residual": ("batch", True)}


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = experiments.new_config(quick)
  c.data = data.get_config()
  c.data.name = "digits"           # real 8x8 digits: depth, not input size, is the variable here
  c.train = train.get_config()
  c.train.steps = 1000             # 300 left trainable nets far below their plateau (docs/report.md)
  c.train.batch_size = 64
  c.train.learning_rate = 1e-3     # every net's when lr_grid is empty
  c.train.schedule = "cosine"
  c.train.log_every = 50           # global gradient norm logged every 50 steps (the "during training" curve)
  c.train.checkpoint_every = 500
  c.train.tensorboard = False
  # Adam rates tried per trained net (family, block, init, depth) on a validation split of the training set
  # (cnnlab.training.tuning): whether a deep net trains at all must not hinge on one shared rate.
  # (): every net at train.learning_rate.
  c.lr_grid = (1e-3, 3e-3, 1e-2)   # (1e-4, 3e-4, 1e-3) had every net that trains at its top
  c.tuning_seeds = 3               # tuning trainings per (net, rate), seeds seed_base..: tuning.choose
  c.families = ("mlp", "cnn")      # deep_mlp (Dense blocks) and deep_cnn (3x3 conv blocks, GAP head)
  c.variants = tuple(VARIANTS)     # block type: plain, BatchNorm, residual, BatchNorm + residual
  c.inits = deep.INITS             # kernel initialisers measured at initialisation (cheap: no training)
  c.train_inits = ("lecun",)       # initialisers of the trained nets (each adds families x variants x seeds fits)
  c.init_depths = (2, 8, 32)       # gradient norms at initialisation (no training; one compile per architecture)
  c.train_depths = (32,)           # depths that are also trained (the deepest: where gradients can vanish)
  c.cnn_width = 8                  # channels of the CNN blocks (CPU budget: a 32-block CNN step is the slow part)
  c.mlp_width = 72                 # hidden width of the MLP blocks: 9 x cnn_width, the fan-in of a 3x3 conv unit
  c.grad_examples = 256            # training examples in the batch the per-layer gradients are taken on
  c.seeds = 10                     # seeds per (family, variant, init, depth)
  # First seed: this run uses seeds seed_base .. seed_base + seeds - 1 (another base draws a disjoint set).
  c.seed_base = 0
  if quick:
    c.train.steps = 10
    c.train.batch_size = 32
    c.lr_grid = (1e-3,)
    c.tuning_seeds = 1
    c.train.log_every = 5
    c.train.checkpoint_every = 10
    c.train.eval_batch_size = 200
    c.variants = ("plain", "bn+residual")
    c.init_depths = (4,)
    c.train_depths = (4,)
    c.cnn_width = 4
    c.mlp_width = 36
    c.grad_examples = 32
    c.seeds = 2
  return c


def validate_config(config: ml_collections.ConfigDict) -> None:
  """One-line errors for impossible settings, before anything is written."""
  if config.seeds < 1 or config.seed_base < 0 or not config.init_depths:
    raise UserError("depth_and_gradients needs seeds >= 1, seed_base >= 0 and at least one init depth")
  if bad := (set(config.inits) | set(config.train_inits)) - set(deep.INITS):
    raise UserError(f"depth_and_gradients: unknown initialisers {sorted(bad)}; use {deep.INITS}")
  if config.lr_grid:
    tuning.check_grid(config.lr_grid, config.tuning_seeds)


def _seeds(config: ml_collections.ConfigDict) -> range:
  return range(config.seed_base, config.seed_base + config.seeds)


def _model(config, family: str, variant: str, depth: int, num_classes: int, init: str = "lecun"):
  norm, residual = VARIANTS[variant]
  width = config.mlp_width if family == "mlp" else config.cnn_width
  return models.create(f"deep_{family}", depth=depth, width=width, norm=norm, residual=residual,
                       num_classes=num_classes, kernel_init=init)


def _log_ratio(n: np.ndarray) -> float:
  """The spread: log10 of block 1's over block L's gradient norm."""
  return float(np.log10(max(n[0], 1e-30) / max(n[-1], 1e-30)))


def _init_norms(config: ml_collections.ConfigDict, ds: data.Dataset, x: np.ndarray, y: np.ndarray) -> list[dict]:
  """Per-block gradient norms at initialisation of every (family, variant, init, depth, seed)."""
  mesh, tx, rows = parallel.make_mesh(), state_lib.make_optimizer(config.train), []
  for f in config.families:
    for v in config.variants:
      for depth in config.init_depths:
        base = kernels.specialise(_model(config, f, v, depth, ds.num_classes), config.train.kernels)  # as fit does
        for i in config.inits:
          net = base.clone(kernel_init=i)
          for seed in _seeds(config):
            init_rng, _ = jax.random.split(jax.random.key(seed))  # the same init as train.fit(seed)
            state = state_lib.create_train_state(net, tx, init_rng, ds.example_shape, mesh)
            # The forward pass does not read the initialiser: one compiled gradient per architecture.
            n = gradients.block_grad_norms(state.replace(apply_fn=base.apply), depth, x, y)
            rows.append({"family": f, "variant": v, "init": i, "depth": depth, "seed": seed, "norms": n.tolist(),
                         "log10_ratio": _log_ratio(n)})
  return rows


def _name(f, v, i, d) -> str:
  return f"{f}/{v}/{i}/d{d}"


def measure(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Spreads (log10 first / last block) at init and trained, block 1's drift over depth, train and test metrics."""
  ds = data.load(config.data)
  x, y = ds.x_train[:config.grad_examples], ds.y_train[:config.grad_examples]
  init_rows = _init_norms(config, ds, x, y)

  def trained_norms(depth, state, _):
    n = gradients.block_grad_norms(state, depth, x, y)
    return {"trained_norms": n.tolist(), "trained_log10_ratio": _log_ratio(n)}

  trained = [(f, v, i, d) for f in config.families for v in config.variants for i in config.train_inits
             for d in config.train_depths]
  nets = {c: _model(config, c[0], c[1], c[3], ds.num_classes, c[2]) for c in trained}
  tuned = (tuning.learning_rates(workdir, config.train, {_trial_name(*c): nets[c] for c in trained}, ds,
                                 config.lr_grid, config.train.progress, config.tuning_seeds, config.seed_base)
           if config.lr_grid else {})
  rates = {_name(*c): tuned[_trial_name(*c)] for c in trained} if tuned else {}
  trials = [sweep.Trial(_trial_name(*c, seed), nets[c], ds, seed,
                        tuning.with_rate(config.train, rates[_name(*c)]["chosen"]) if rates else config.train,
                        dict(zip(("family", "variant", "init", "depth"), c)),
                        after_fit=functools.partial(trained_norms, c[3]))
            for c in trained for seed in _seeds(config)]
  records = sweep.run_trials(workdir, trials, progress=config.train.progress)
  keys = ("family", "variant", "init", "depth")
  cells = lambda rows, metric: {_name(*k): vals for k, vals in sweep.group(rows, keys, metric).items()}
  first = sweep.group([{**r, "lg": np.log10(max(r["norms"][0], 1e-30))} for r in init_rows], keys, "lg")
  shallow = min(config.init_depths)
  # Drift: how far block 1's gradient moved (log10, mean over seeds) from the shallowest net of the same kind.
  drift = {_name(f, v, i, d): float(np.mean(lf) - np.mean(first[(f, v, i, shallow)]))
           for (f, v, i, d), lf in first.items()}
  return {"dataset": ds.name, "init_log10_ratio": cells(init_rows, "log10_ratio"),
          "init_log10_first_block_drift": drift, "trained_log10_ratio": cells(records, "trained_log10_ratio"),
          **{m: cells(records, m) for m in ("train_loss", "train_accuracy", "test_accuracy")},
          "params": {_name(r["family"], r["variant"], r["init"], r["depth"]): r["params"] for r in records},
          "learning_rates": rates, "init_rows": init_rows, "records": records}


def _trial_name(f, v, i, d, seed=None) -> str:
  """A trained net's trial (with `seed`) or its tuning name (without)."""
  return f"{f}_{v}_{i}_d{d}" + ("" if seed is None else f"_s{seed}")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Measures, writes results.json, results.md and the figures to `workdir`; returns the measurements."""
  results = measure(config, workdir)
  results["smoke_test"] = config.smoke_test
  md = render(results, config)
  _plot(workdir, config, results["init_rows"], max(config.init_depths))
  _plot_training(workdir, config)
  return reporting.publish(workdir, results, md)


def _deepest(results: dict) -> int:
  return max(int(k.rsplit("/d", 1)[1]) for k in results["init_log10_ratio"])


def render(results: dict, config: ml_collections.ConfigDict) -> str:
  """results.md: spread and drift at init per initialiser, the trained nets' spread and metrics, the verdict."""
  cells = [(f, v) for f in config.families for v in config.variants]
  ratio, drift, ratio_tr, params = (results[k] for k in ("init_log10_ratio", "init_log10_first_block_drift",
                                                         "trained_log10_ratio", "params"))
  fmt_r = lambda v: f"{np.mean(v):+.1f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.1f}"
  pct = lambda k, m: reporting.fmt_mean_std(results[m][k], 100)
  trained = [(f, v, i, d) for f, v in cells for i in config.train_inits for d in config.train_depths]
  return "".join([
      f"# Depth and gradients: do CNNs prevent vanishing/exploding gradients? (`{results['dataset']}`)\n\n",
      f"Gradient norms of each block's weights (kernels) for the cross-entropy on {config.grad_examples} training "
      f"examples; {config.seeds} seeds from seed {config.seed_base}; MLP width {config.mlp_width} = the fan-in "
      f"of a 3x3 conv unit of {config.cnn_width} channels. Mean ± std over seeds.\n\n",
      "## At initialisation\n\n",
      reporting.markdown_table(
          ["family", "block", "init"] + [f"depth {d}: spread / drift" for d in config.init_depths],
          [[f, v, i] + [f"{fmt_r(ratio[_name(f, v, i, d)])} / {drift[_name(f, v, i, d)]:+.1f}"
                        for d in config.init_depths] for f, v in cells for i in config.inits]),
      "\nSpread: log10 of block-1 / block-L weight-gradient norm (0 balanced, < 0 vanishing towards the input, "
      "> 0 exploding). Drift: log10 of block 1's gradient norm at this depth over depth "
      f"{min(config.init_depths)} (same family, block type and initialiser; mean over seeds).\n",
      f"\n## After {config.train.steps} Adam steps ({config.train.schedule} schedule)\n\n",
      rates_text.sentence(results["learning_rates"], "net"), "\n\n",
      reporting.markdown_table(
          ["family", "block", "init", "depth", "params", "rate", "spread", "train loss", "train acc %", "test acc %"],
          [[f, v, i, d, params[_name(f, v, i, d)], _rate(results, config, _name(f, v, i, d)),
            fmt_r(ratio_tr[_name(f, v, i, d)]),
            reporting.fmt_mean_std(results["train_loss"][_name(f, v, i, d)], 1, 2),
            pct(_name(f, v, i, d), "train_accuracy"), pct(_name(f, v, i, d), "test_accuracy")]
           for f, v, i, d in trained]),
      f"\nTrain loss on the whole training set after {config.train.steps} steps; chance is ln 10 = 2.30: a net "
      "still near it has not trained.\n\n",
      tables.verdicts_section(CLAIMS, results, "## Verdict"),
      "\n![gradient norms per layer](grad_norms.png)\n\n![during training](grad_norm_during_training.png)\n"])


def _rate(results: dict, config: ml_collections.ConfigDict, name: str) -> str:
  table = results["learning_rates"]
  return f"{table[name]['chosen']:g}" if table else f"{config.train.learning_rate:g}"


def _plot(workdir, config, init_rows, deepest) -> None:
  fams, inits = list(config.families), list(config.inits)
  fig, axes = reporting.new_figure(len(inits), len(fams), figsize=(5 * len(fams), 3.2 * len(inits)), sharey=True,
                                   squeeze=False)
  for row, i in enumerate(inits):
    for ax, fam in zip(axes[row], fams):
      for v in config.variants:
        norms = [r["norms"] for r in init_rows if (r["family"], r["variant"], r["init"], r["depth"])
                 == (fam, v, i, deepest)]
        ax.plot(np.arange(1, deepest + 1), np.exp(np.mean(np.log(np.maximum(norms, 1e-30)), 0)), marker=".",
                label=v)
      ax.set_yscale("log")
      ax.set_title(f"{fam}, {i} init, depth {deepest}", fontsize=9)
      ax.grid(alpha=0.3)
    axes[row][0].set_ylabel("weight-gradient norm")
  axes[0][0].legend(fontsize=8)
  for ax in axes[-1]:
    ax.set_xlabel("block")
  reporting.save_figure(fig, workdir, "grad_norms")


def _plot_training(workdir, config) -> None:
  """Global gradient norm (mean over each logging window) during training, first seed, deepest trained depth."""
  d, i = max(config.train_depths), config.train_inits[0]
  fig, ax = reporting.new_figure(figsize=(6, 4))
  for f in config.families:
    for v in config.variants:
      trial = os.path.join(workdir, "trials", _trial_name(f, v, i, d, config.seed_base))
      rows = [r for r in metric_writer.read_metrics(trial) if "train_grad_norm" in r]
      ax.plot([r["step"] for r in rows], [r["train_grad_norm"] for r in rows], marker=".", label=f"{f} {v}")
  ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_ylabel(f"global gradient norm (depth {d}, {i} init)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  reporting.save_figure(fig, workdir, "grad_norm_during_training")


# A decade (10x) is the least imbalance of the first and last blocks' gradients that changes how a net trains (an
# adaptive step compensates for less); "prevents" needs the CNN at least that much better balanced than the MLP.
_RULE_VANISHING = stats.Rule("|spread| at the deepest depth at init (decades), plain MLP minus plain CNN, paired by "
                             "seed, one comparison per initialiser", "greater", 1.0)


def _judge_vanishing(results: dict) -> ledger.Finding:
  d, ratio = _deepest(results), results["init_log10_ratio"]
  inits = dict.fromkeys(k.split("/")[2] for k in ratio)
  spread = {(f, i): np.abs(ratio[_name(f, "plain", i, d)]) for f in ("mlp", "cnn") for i in inits}
  verdict, figure = stats.judge(_RULE_VANISHING, [(i, stats.paired(spread["mlp", i], spread["cnn", i]))
                                                 for i in inits], unit=" decades")
  means = ", ".join(f"{i} {np.mean(ratio[_name('mlp', 'plain', i, d)]):+.1f} / "
                    f"{np.mean(ratio[_name('cnn', 'plain', i, d)]):+.1f}" for i in inits)
  return ledger.Finding(f"spread at depth {d}, plain MLP / plain CNN: {means}; MLP minus CNN |spread|: {figure}",
                        verdict)


CLAIMS = [
    ledger.Claim("cnns_prevent_vanishing_gradients", "CNNs prevent the vanishing and exploding gradients of deep "
                 "networks through the regularisation of shared weights over fewer connections.",
                 "Wikipedia, 'Convolutional neural network'", "per-block weight-gradient norms of deep MLPs and "
                 "CNNs of equal fan-in (plain / BatchNorm / residual; LeCun, He and orthogonal init) at init and "
                 "after training; supported if, under each initialiser, the plain CNN's first/last-block imbalance "
                 "(|log10 ratio| at the deepest depth) is more than a decade smaller than the plain MLP's",
                 _judge_vanishing, rule=_RULE_VANISHING),
]
