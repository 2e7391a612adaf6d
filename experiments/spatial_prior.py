"""A CNN's advantage comes from its spatial prior: scramble the positions and it is gone (MNIST-1D Table 1).

Reproduces Greydanus & Kobak (MNIST-1D) Table 1 — logistic regression, residual MLP, CNN and
bidirectional GRU on MNIST-1D and on MNIST-1D with one fixed random permutation of the 40 positions
(`shuffle_seq`) — and its 2-D analogue: CNN vs MLP on real MNIST digits with one fixed pixel
permutation. A permutation changes nothing for the logistic model and the MLP (their function class is
permutation-invariant), so any drop of the CNN/GRU measures how much they relied on locality.

Deviation from the paper (stated in results.md): fewer steps than its 6,000 (CPU budget), same
optimiser (Adam, lr 1e-2, batch 100), same models (GRU: 5,110 params vs 5,134, flax's GRU has fewer biases).

Command:  python run.py --exp=spatial_prior
Run time: 1.3 min (77 s) beside another experiment in the standard report (2 CPU cores, 2026-11-28); 36 trainings.
Result (measured, 1,500 steps (GRU 750), 3 seeds): MNIST-1D logistic 31.1 / MLP 66.1 / CNN 93.5 / GRU 88.1 %;
          shuffled 31.4 / 62.5 / 58.1 / 51.1 % (paper: 32/68/94/91 and 32/68/56/57) — same ranking, the CNN
          and GRU lose their lead. 2-D (mnist5k): CNN 93.4 -> 85.9 % when permuted, MLP 92.8 ± 0.2 -> 93.2 ± 0.4 %.
          Verdicts: MNIST-1D supported; 2-D supported (the MLP counts as unaffected; the CNN is not clearly above
          the MLP on the original pixels). Margin-thin: in the run before (2026-11-28 04:54 UTC, other float
          rounding: XLA:CPU's YNNPACK dots) the MLP read 92.7 ± 0.1 -> 93.2 ± 0.4 %, more than 2 SE, and the
          2-D verdict was partly supported.
          results.md holds the table and the verdicts computed from it.
"""

import ml_collections
import numpy as np

from cnnlab import data, models
from cnnlab.report import ledger, rendering as reporting, verdicts
from cnnlab.training import sweep, train

# Greydanus & Kobak, MNIST-1D Table 1: test accuracy (%), mean ± std, 6,000 steps.
PAPER = {("logistic", False): "32 ± 1", ("mlp", False): "68 ± 2", ("cnn", False): "94 ± 2", ("gru", False): "91 ± 2",
         ("logistic", True): "32 ± 1", ("mlp", True): "68 ± 2", ("cnn", True): "56 ± 2", ("gru", True): "57 ± 2"}
LABELS = {"logistic": "logistic regression", "mlp": "MLP (residual)", "cnn": "CNN", "gru": "GRU (bidirectional)"}


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data = data.get_config()
  c.data.name = "mnist1d"          # 4,000 train / 1,000 test signals of length 40 (paper's default arguments)
  c.train = train.get_config()     # the paper's optimiser: Adam, lr 1e-2, batch 100
  c.train.steps = 1500             # paper: 6,000 (too slow for 24 runs in the 15-min report on 2 CPU cores)
  c.train.batch_size = 100
  c.train.learning_rate = 1e-2
  c.train.log_every = 200
  c.train.checkpoint_every = 1500
  c.gru_steps = 750                # the GRU's scan is ~4x slower per step than the others
  c.seeds = 3                      # seeds per (model, dataset)
  c.image = ml_collections.ConfigDict()
  c.image.data = data.get_config()  # the 2-D analogue: real MNIST digits (mnist5k: 4,000 train / 1,000 test)
  c.image.train = train.get_config()
  c.image.train.steps = 300
  c.image.train.batch_size = 64
  c.image.train.log_every = 100
  c.image.train.checkpoint_every = 300
  c.image.features = (8, 16)        # CNN channels per stage (3x3 conv, ReLU, 2x2 max pool)
  c.image.mlp_hidden = (256, 256)   # MLP hidden widths
  c.image.permutation_seed = 0      # seed of the one fixed pixel permutation
  if quick:
    c.data.name = "digits"  # quick runs skip MNIST-1D generation: 1-D models see each 8x8 digit as 64 samples
    c.train.steps = 20
    c.gru_steps = 10
    c.train.log_every = 10
    c.train.checkpoint_every = 20
    c.train.eval_batch_size = 200
    c.seeds = 2
    c.image.data.name = "digits"
    c.image.train.steps = 20
    c.image.train.batch_size = 32
    c.image.train.log_every = 10
    c.image.train.checkpoint_every = 20
    c.image.train.eval_batch_size = 200
    c.image.features = (4, 8)
    c.image.mlp_hidden = (32, 32)   # the overfitting quick config's models: compiled once per test process
    c.train.tensorboard = c.image.train.tensorboard = False
  return c


def _as_signals(ds: data.Dataset) -> data.Dataset:
  """(N, H, W, C) images as (N, H*W, C) signals (quick runs only)."""
  if ds.x_train.ndim == 3:
    return ds
  f = lambda x: x.reshape(x.shape[0], -1, x.shape[-1])
  return data.Dataset(ds.name, f(ds.x_train), ds.y_train, f(ds.x_test), ds.y_test, ds.num_classes)


def _datasets_1d(config: ml_collections.ConfigDict) -> dict[bool, data.Dataset]:
  if config.data.name == "mnist1d":
    shuffled = ml_collections.ConfigDict(config.data.to_dict())
    shuffled.name = "mnist1d_shuffled"  # the paper's own shuffle_seq permutation
    return {False: data.load(config.data), True: data.load(shuffled)}
  ds = _as_signals(data.load(config.data))
  return {False: ds, True: data.permute_pixels(ds, 0)}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  sets = _datasets_1d(config)
  nets = {m: models.create(f"mnist1d_{m}", num_classes=sets[False].num_classes) for m in LABELS}
  gru_train = ml_collections.ConfigDict(config.train.to_dict())
  gru_train.steps = config.gru_steps
  gru_train.checkpoint_every = config.gru_steps
  trials = [sweep.Trial(f"1d_{m}_{'shuf' if s else 'orig'}_s{seed}", net, sets[s], seed,
                        gru_train if m == "gru" else config.train, {"model": m, "shuffled": s})
            for s in (False, True) for seed in range(config.seeds) for m, net in nets.items()]
  rec1 = sweep.run_trials(workdir, trials, progress=config.train.progress)
  acc1 = sweep.group(rec1, ("model", "shuffled"), "test_accuracy")
  params1 = {r["model"]: r["params"] for r in rec1}

  img = data.load(config.image.data)
  img_sets = {False: img, True: data.permute_pixels(img, config.image.permutation_seed)}
  nets2 = {"cnn": models.create("cnn", features=tuple(config.image.features), num_classes=img.num_classes),
           "mlp": models.create("mlp", hidden=tuple(config.image.mlp_hidden), num_classes=img.num_classes)}
  trials2 = [sweep.Trial(f"2d_{m}_{'perm' if s else 'orig'}_s{seed}", net, img_sets[s], seed, config.image.train,
                         {"model": m, "shuffled": s})
             for s in (False, True) for seed in range(config.seeds) for m, net in nets2.items()]
  rec2 = sweep.run_trials(workdir, trials2, progress=config.train.progress)
  acc2 = sweep.group(rec2, ("model", "shuffled"), "test_accuracy")
  params2 = {r["model"]: r["params"] for r in rec2}

  mean = lambda v: float(np.mean(v))
  order = sorted(LABELS, key=lambda m: -mean(acc1[(m, False)]))
  paper_order = ["cnn", "gru", "mlp", "logistic"]
  ranking_holds = order == paper_order
  # Permutation-invariant models: no clear change either way. Local models: a clear drop.
  unaffected = {m: not (verdicts.clearly_greater(acc1[(m, False)], acc1[(m, True)])
                        or verdicts.clearly_greater(acc1[(m, True)], acc1[(m, False)])) for m in ("logistic", "mlp")}
  drops = {m: verdicts.clearly_greater(acc1[(m, False)], acc1[(m, True)]) for m in ("cnn", "gru")}
  cnn_lead_lost = not verdicts.clearly_greater(acc1[("cnn", True)], acc1[("mlp", True)])
  v_1d = verdicts.from_counts(sum(unaffected.values()) + sum(drops.values()) + cnn_lead_lost, 5)
  mlp2_unaffected = not (verdicts.clearly_greater(acc2[("mlp", False)], acc2[("mlp", True)])
                         or verdicts.clearly_greater(acc2[("mlp", True)], acc2[("mlp", False)]))
  cnn2_drops = verdicts.clearly_greater(acc2[("cnn", False)], acc2[("cnn", True)])
  cnn2_lead = verdicts.clearly_greater(acc2[("cnn", False)], acc2[("mlp", False)])
  cnn2_lead_lost = not verdicts.clearly_greater(acc2[("cnn", True)], acc2[("mlp", True)])
  v_2d = verdicts.from_counts(mlp2_unaffected + cnn2_drops + cnn2_lead_lost, 3)

  results = {"mnist1d": {f"{m}@{'shuffled' if s else 'original'}": v for (m, s), v in acc1.items()},
             "digits_2d": {f"{m}@{'permuted' if s else 'original'}": v for (m, s), v in acc2.items()},
             "params_1d": params1, "params_2d": params2, "ranking": order, "ranking_holds": ranking_holds,
             "unaffected_by_shuffle": unaffected, "drop_when_shuffled": drops, "cnn_lead_lost_1d": cnn_lead_lost,
             "mlp_2d_unaffected": mlp2_unaffected, "cnn_2d_drops": cnn2_drops, "cnn_2d_leads_on_original": cnn2_lead,
             "cnn_2d_lead_lost": cnn2_lead_lost, "verdict_1d": v_1d, "verdict_2d": v_2d, "records": rec1 + rec2}
  fmt = lambda v: reporting.fmt_mean_std(v, 100)
  yn = lambda b: "yes" if b else "no"
  md = [f"# Spatial prior: MNIST-1D Table 1 and its 2-D analogue\n\n",
        f"## MNIST-1D (`{sets[False].name}`, {len(sets[False].y_train)} train / {len(sets[False].y_test)} test)\n\n",
        f"Ours: {config.seeds} seeds, Adam lr {config.train.learning_rate:g}, batch {config.train.batch_size}, "
        f"**{config.train.steps} steps ({config.gru_steps} for the GRU) instead of the paper's 6,000** (CPU budget). "
        "Test accuracy in %, mean ± std.\n\n",
        reporting.markdown_table(
            ["model", "params", "paper", "ours", "paper, shuffled", "ours, shuffled"],
            [[LABELS[m], params1[m], PAPER[(m, False)], fmt(acc1[(m, False)]), PAPER[(m, True)], fmt(acc1[(m, True)])]
             for m in LABELS]),
        f"\nRanking on the original data: {' > '.join(order)} (paper: {' > '.join(paper_order)}) — "
        f"{'same' if ranking_holds else 'different'}.\n\n",
        f"## 2-D analogue (`{img.name}`, one fixed pixel permutation)\n\n",
        f"{config.image.train.steps} Adam steps of batch {config.image.train.batch_size}, {config.seeds} seeds.\n\n",
        reporting.markdown_table(["model", "params", "original", "permuted"],
                                 [[m.upper(), params2[m], fmt(acc2[(m, False)]), fmt(acc2[(m, True)])]
                                  for m in nets2]),
        "\n## Verdicts\n\n",
        f"- **MNIST-1D: the CNN's and GRU's advantage is a spatial prior — {v_1d}.** Unaffected by the shuffle "
        f"(no clear difference, 2 standard errors): logistic {yn(unaffected['logistic'])}, MLP "
        f"{yn(unaffected['mlp'])}. Clear drop: CNN {yn(drops['cnn'])}, GRU {yn(drops['gru'])}. CNN no longer clearly "
        f"above the MLP once shuffled: {yn(cnn_lead_lost)}.\n",
        f"- **2-D: permuting pixels leaves the MLP unaffected and removes the CNN's advantage — {v_2d}.** MLP "
        f"unaffected: {yn(mlp2_unaffected)}; CNN drops: {yn(cnn2_drops)}; CNN above MLP on the original pixels: "
        f"{yn(cnn2_lead)}; CNN no longer clearly above the MLP once permuted: {yn(cnn2_lead_lost)}.\n",
        "\n![accuracy](accuracy.png)\n"]
  md = "".join(md)
  _plot(workdir, acc1, acc2, nets2)
  reporting.write_results(workdir, results, md)
  print(md)
  return results


def _plot(workdir, acc1, acc2, nets2) -> None:
  fig, (ax, bx) = reporting.new_figure(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
  for ax_, acc, names in ((ax, acc1, list(LABELS)), (bx, acc2, list(nets2))):
    xs = np.arange(len(names))
    for j, (s, label) in enumerate(((False, "original"), (True, "permuted"))):
      ax_.bar(xs + 0.4 * j, [100 * np.mean(acc[(m, s)]) for m in names], 0.4,
              yerr=[100 * np.std(acc[(m, s)]) for m in names], capsize=3, label=label)
    ax_.set_xticks(xs + 0.2, names)
    ax_.set_ylabel("test accuracy (%)")
    ax_.legend(fontsize=8)
  ax.set_title("MNIST-1D")
  bx.set_title("2-D digits")
  reporting.save_figure(fig, workdir, "accuracy")


def _judge_spatial_prior(results: dict) -> ledger.Finding:
  acc = {k: 100 * float(np.mean(v)) for k, v in results["mnist1d"].items()}
  acc2 = {k: 100 * float(np.mean(v)) for k, v in results["digits_2d"].items()}
  held, total = verdicts.count_true([results["verdict_1d"] == verdicts.SUPPORTED,
                                     results["verdict_2d"] == verdicts.SUPPORTED])
  return ledger.Finding(f"MNIST-1D CNN {acc['cnn@original']:.1f} -> {acc['cnn@shuffled']:.1f} % when shuffled, MLP "
                        f"{acc['mlp@original']:.1f} -> {acc['mlp@shuffled']:.1f} %; 2-D CNN {acc2['cnn@original']:.1f} "
                        f"-> {acc2['cnn@permuted']:.1f} %, MLP {acc2['mlp@original']:.1f} -> {acc2['mlp@permuted']:.1f} %",
                        verdicts.from_counts(held, total))


CLAIMS = [
    ledger.Claim("spatial_prior", "A CNN's advantage comes from its spatial prior: with the pixels shuffled by one "
                 "fixed permutation it loses its lead, while an MLP is unaffected.", "Greydanus & Kobak 2020 "
                 "(MNIST-1D, Table 1)", "test accuracy of logistic / MLP / CNN / GRU on MNIST-1D and CNN / MLP on "
                 "MNIST, original vs permuted (3 seeds); supported if it holds in 1-D and 2-D", _judge_spatial_prior),
]
