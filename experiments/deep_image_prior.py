"""An untrained conv net is an image prior: it fits a photo faster than noise, so stopping early denoises and inpaints.

After Ulyanov, Vedaldi & Lempitsky, "Deep Image Prior" (CVPR 2018): a random "skip" hourglass (3x3 convs over 4-5
scales) maps a fixed code z to an image and is fitted by Adam to one corrupted photo (seed i: photo i of `images`,
cycling, its own noise or mask, init and code); the clean photo only scores. Parts: fitting curves (steps to a
fixed MSE on the photo, photo + noise, shuffled pixels, uniform noise), denoising (sigma 25/255), 50% inpainting.
Judged outputs never see the clean photo: denoising stops at the first step whose loss reaches sigma^2
(discrepancy principle), inpainting takes the last step. Against nets without a spatial prior (free pixels: the
image is the parameter; a per-pixel MLP on z) stopped alike, and classical methods tuned without the clean photo
(`cnnlab.ops.restoration`). The first `full_seeds` seeds run past the stop (oracle peak; the fall as the net fits
the noise). The paper's PSNR (2.2M parameters, ~512 px, 9 images) is not comparable in absolute terms.

Command:  python run.py --exp=deep_image_prior
Result:   see REPORT.md (ledger) and the run's results.md.
"""

import math
import os
import time

import ml_collections
import numpy as np

import experiments
from cnnlab import models as model_lib
from cnnlab.data import images
from cnnlab.errors import UserError
from cnnlab.metrics import image as image_metrics
from cnnlab.ops import analysis, restoration as classical
from cnnlab.report import figures, ledger, rendering as reporting, stats, tables
from cnnlab.training import dip

PAPER = {"psnr": 29.22, "params": 2.2e6, "images": 9}  # Ulyanov et al. 2018, sigma=25 denoising.
FIT_TARGETS = ("image", "image + noise", "shuffled pixels", "uniform noise")
STOP_CHUNK = 10  # steps between loss checks of a fit that stops at a threshold
DIP = "DIP (skip net)"
NETS = (DIP, "free pixels", "per-pixel MLP")  # the conv net and the two without a spatial prior
# "Faster" means curves a reader tells apart: at least a quarter more steps (log2 1.25) for the other target.
_RULE_FITTING = stats.Rule("log2 of the Adam steps the skip net takes to MSE 0.01 on each other target over those on "
                           "the clean photo, paired by seed (photo, init, code)", "greater", math.log2(1.25))
# Half a decibel: about the smallest PSNR difference seen side by side; "better" is about direction, not size.
_RULE_PRIOR = stats.Rule("PSNR to the clean photo (dB), skip net minus each net without a spatial prior, outputs "
                         "chosen without the clean photo (denoising: first step with loss <= sigma^2; inpainting: "
                         "the last step), paired by seed (photo, corruption, init, code)", "greater", 0.5)


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  """Standard: five 64 px photos, 122k-parameter net, 10 seeds for each part."""
  c = experiments.new_config(quick)
  c.seed_base = 0             # first seed: this run uses seeds seed_base .. seed_base + n - 1 (another base draws a
                              # disjoint set); seed i: photo i % len(images), noise draw / mask, net init, code z
  c.num_seeds = 10            # seeds for denoising and inpainting
  c.fit_seeds = 10            # seeds for the fitting curves (each seed fits all four targets)
  c.full_seeds = 1            # the first this many seeds run every step even past their stopping rule (figures, peak)
  c.images = ("astronaut", "coffee", "chelsea", "china", "flower")  # bundled photos (cnnlab.data.images.SOURCES)
  c.size = 64                 # crop side in pixels (divisible by 2**depth)
  c.crop = 1.0                # central square fraction of the photo, resized to `size`
  c.width = 32                # channels of every down/up conv of the skip net (paper: 128)
  c.depth = 4                 # scales of the skip net (paper: 5)
  c.skip_width = 4            # channels of each skip branch (paper: 4)
  c.code_channels = 32        # channels of the random input code z (paper: 32)
  c.upsample = "bilinear"     # 'bilinear' | 'nearest'
  c.learning_rate = 0.01      # Adam (paper: 0.01)
  c.reg_noise_std = 1 / 30    # std of the fresh noise added to z at every step (paper: 1/30)
  c.ema_decay = 0.99          # exponential averaging of the outputs (paper: 0.99)
  c.sigma = 25 / 255          # Gaussian noise std for denoising (image in [0, 1])
  c.drop_fraction = 0.5       # fraction of pixels dropped for inpainting
  c.fit_steps = 400           # cap on steps for each fitting curve
  c.fit_mse = 0.01            # MSE threshold (20 dB to the target) that defines "fitted"
  c.denoise_steps = 1000      # steps of a denoising fit that runs past its stop (full seeds; a cap for the others)
  c.inpaint_steps = 800       # steps of each inpainting fit
  c.mlp_width = 32            # width of the per-pixel MLP ablation
  c.mlp_depth = 2             # hidden layers of the per-pixel MLP ablation
  c.blur_sigma_max = 4.0      # blur baselines: widths 0.1, 0.2, ..., blur_sigma_max tried
  c.bm3d = True               # BM3D baseline (the `bm3d` package: seconds per photo)
  c.curve_every = 10          # keep every n-th step of the curves in results.json / metrics.jsonl
  if quick:
    c.size, c.width, c.depth, c.code_channels, c.images = 32, 16, 2, 8, ("astronaut", "coffee")
    c.num_seeds, c.fit_seeds, c.fit_steps, c.denoise_steps, c.inpaint_steps = 2, 2, 40, 60, 60
    c.mlp_width, c.blur_sigma_max, c.curve_every = 8, 1.0, 5
  c.lock()
  return c


def validate_config(config: ml_collections.ConfigDict) -> None:
  """One-line UserErrors for impossible settings."""
  if config.size % 2 ** config.depth:
    raise UserError(f"size {config.size} must be divisible by 2**depth = {2 ** config.depth}")
  if min(config.num_seeds, config.fit_seeds) < 1 or min(config.seed_base, config.full_seeds) < 0:
    raise UserError("num_seeds and fit_seeds must be >= 1, seed_base and full_seeds >= 0")
  if not config.images or set(config.images) - set(images.SOURCES):
    raise UserError(f"images must be some of {', '.join(sorted(images.SOURCES))}, got {config.images}")


def _nets(config, channels: int) -> dict:
  """The DIP net and the two ablations without a spatial prior, by the names of NETS."""
  return dict(zip(NETS, (model_lib.create("dip_skip", width=config.width, depth=config.depth, out_channels=channels,
                                          skip_width=config.skip_width, upsample=config.upsample),
                         model_lib.create("dip_pixels", out_channels=channels),
                         model_lib.create("dip_pixel_mlp", width=config.mlp_width, depth=config.mlp_depth,
                                          out_channels=channels))))


def _photos(config, n: int):
  return dip.seeded_photos(config.images, config.seed_base, n, config.size, config.crop)


def _fit(config, workdir, net, name, seed, target, clean, steps, tags, lap, mask=None, reg_noise=True, stop=None):
  return dip.trial(workdir, name, net, dip.problem(target, clean, seed, config.code_channels, mask), seed, steps,
                   config.learning_rate, tags, reg_noise_std=config.reg_noise_std if reg_noise else 0.0,
                   ema_decay=config.ema_decay, stop_loss=stop, every=STOP_CHUNK, lap=lap)


def fitting_curves(config, workdir: str, log) -> dict:
  """Paper Fig. 2: steps for the skip net to fit each target to MSE <= fit_mse (no input noise), per seed."""
  trials, lap = [], dip.laps()
  for i, seed, _, clean in _photos(config, config.fit_seeds):
    for name, target in dip.fitting_targets(clean, config.sigma, np.random.default_rng(seed)).items():
      full = i < config.full_seeds and name == "image + noise"  # it runs on: the net goes on to fit the noise
      trials.append(_fit(config, workdir, _nets(config, clean.shape[-1])[DIP], f"fit {name} s{seed}", seed, target,
                         target, config.fit_steps, {"target": name, "run": i, "mse_to_clean": float(
                             image_metrics.mse(target, clean))}, lap, reg_noise=False,
                         stop=None if full else config.fit_mse))
  records = dip.run_fits(workdir, trials, log)
  by_target = lambda name: [r for r in records if r["target"] == name]  # noqa: E731
  return {name: {"steps": [dip.steps_to_reach(r["curves"]["loss"], config.fit_mse) for r in by_target(name)],
                 **{k: [r["summary"][k] for r in by_target(name)] for k in ("steps_run", "final_loss")},
                 "mse_to_clean": [r["mse_to_clean"] for r in by_target(name)],
                 "loss_curve": by_target(name)[0]["curves"]["loss"][::config.curve_every].tolist()}
          for name in FIT_TARGETS}


def restoration(config, task: str, workdir: str, log) -> dict:
  """Denoising or inpainting with each net and the classical baselines, over num_seeds seeds."""
  steps = config.denoise_steps if task == "denoise" else config.inpaint_steps
  stop = config.sigma ** 2 if task == "denoise" else None
  widths = np.round(np.arange(1, int(round(config.blur_sigma_max * 10)) + 1) / 10, 2)
  runs, trials, lap = [], [], dip.laps()
  for i, seed, name, clean in _photos(config, config.num_seeds):
    corrupted, mask, done = classical.corrupt_and_restore(task, clean, np.random.default_rng(seed), config.sigma,
                                                          config.drop_fraction, widths, config.bm3d)
    runs.append({"seed": seed, "image": name, "input_psnr": float(image_metrics.psnr(corrupted, clean)), "nets": {},
                 "classical": {k: {"psnr": v["psnr"], "param": v["param"]} for k, v in done.items()},
                 "images": {"clean": clean, "corrupted": corrupted, **{k: v["image"] for k, v in done.items()}}})
    # The ablations fit without input noise: at std 1/30 it drowns the per-pixel MLP's U(0, 0.1) code.
    trials += [_fit(config, workdir, net, f"{task} {n} s{seed}", seed, corrupted, clean, steps,
                    {"run": i, "task": task, "method": n}, lap, mask=mask, reg_noise=n == DIP,
                    stop=stop if i >= config.full_seeds else None) for n, net in _nets(config, clean.shape[-1]).items()]
  for r in dip.run_fits(workdir, trials, log, stop, config.curve_every):
    run = runs[r["run"]]
    run["nets"][r["method"]] = r["summary"]
    if r["method"] == DIP:
      run["images"]["dip_best"], run["images"]["dip_ema"] = r["best_out"], r["final_ema"]
  return {"runs": runs, "steps": steps, "stop_loss": stop}


def _ms(values, digits: int = 2) -> str:
  values = [v for v in values if v is not None and np.isfinite(v)]
  return reporting.fmt_mean_std(values, digits=digits) if values else "n/a"


def _restoration_rows(res: dict, full_seeds: int) -> list[list]:
  """Method, PSNR, the skip net at its stop minus the method (paired by seed, 95% CI), note."""
  runs, full = res["runs"], res["runs"][:full_seeds]
  get = lambda n, k, rs=runs: [r["nets"][n][k] for r in rs]  # noqa: E731

  def row(label, values, note="", paired=True):
    e = stats.paired(get(DIP, "stop_psnr"), values) if paired else None
    return [label, _ms(values), "{:+.2f} [{:+.2f}, {:+.2f}]".format(e.estimate, *e.interval()) if e else "", note]
  stops = lambda n: [s or r for s, r in zip(get(n, "stop_step"), get(n, "steps_run"))]  # noqa: E731
  reached = lambda n: f", reached in {sum(s is not None for s in get(n, 'stop_step'))}/{len(runs)}"  # noqa: E731
  rule = "first step with loss <= sigma^2" if res["stop_loss"] else "last step"
  return ([row("corrupted input", [r["input_psnr"] for r in runs])]
          + [row(k, [r["classical"][k]["psnr"] for r in runs], runs[0]["classical"][k]["param"])
             for k in runs[0]["classical"]]
          + [row(f"{n}: {rule}", get(n, "stop_psnr"), f"step {_ms(stops(n), 0)}"
                 + (reached(n) if res["stop_loss"] else ""), paired=n != DIP) for n in runs[0]["nets"]]
          + [row(f"{DIP}: EMA at that step", get(DIP, "stop_ema_psnr"))]
          + [row(f"{DIP}: {label} (first {len(full)} seed(s), oracle)" if "peak" in label else
                 f"{DIP}: {label} (first {len(full)} seed(s))", get(DIP, k, full), paired=False)
             for label, k in (("peak", "peak_psnr"), (f"after all {res['steps']} steps", "final_psnr"),
                              ("EMA after all steps", "ema_final_psnr")) if full])


def _figures(config, fit, den, inp, workdir) -> list[str]:
  fig, axes = reporting.new_figure(1, 3, figsize=(15, 4))
  steps = lambda curve: 1 + config.curve_every * np.arange(len(curve))  # noqa: E731
  for name in FIT_TARGETS:
    axes[0].plot(steps(fit[name]["loss_curve"]), fit[name]["loss_curve"], label=name)
  axes[0].axhline(config.fit_mse, color="k", ls=":", label=f"MSE {config.fit_mse:g}")
  axes[0].set(yscale="log", xlabel="step", ylabel="MSE to the target", title="fitting curves (first seed)")
  for ax, res, title in ((axes[1], den, "denoising"), (axes[2], inp, "inpainting")):
    for i, run in enumerate(res["runs"]):
      for j, (name, r) in enumerate(run["nets"].items()):
        ax.plot(steps(r["psnr_curve"]), r["psnr_curve"], color=f"C{j}", lw=1, alpha=0.6, label=None if i else name)
    ax.axhline(np.mean([r["input_psnr"] for r in res["runs"]]), color="gray", ls=":", label="corrupted input")
    ax.set(xlabel="step", ylabel="PSNR to the clean photo (dB)", title=f"{title} ({len(res['runs'])} seeds)")
  for ax in axes:
    ax.legend(fontsize=7)
  names = [reporting.save_figure(fig, workdir, "curves")]
  fig, axes = reporting.new_figure(2, 5, figsize=(13, 5.6))
  for row, res in enumerate((den, inp)):
    run = res["runs"][0]
    best = max(run["classical"], key=lambda k: run["classical"][k]["psnr"])
    d = run["nets"][DIP]
    figures.image_panels(axes[row], [
        (run["images"]["clean"], f"clean ({run['image']})"),
        (run["images"]["corrupted"], f"corrupted {run['input_psnr']:.2f} dB"),
        (run["images"][best], f"{best} {run['classical'][best]['psnr']:.2f} dB"),
        (run["images"]["dip_best"], f"DIP oracle step {d['peak_step']} {d['peak_psnr']:.2f} dB"),
        (run["images"]["dip_ema"], f"DIP EMA, last step {d['ema_final_psnr']:.2f} dB")])
  names.append(reporting.save_figure(fig, workdir, "images"))
  return names


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Fitting curves, denoising and inpainting; writes results.json, results.md, metrics.jsonl, curves/images PNGs."""
  start = time.time()
  paper_net = model_lib.create("dip_skip", width=128, depth=5, skip_width=4, out_channels=3)
  log = dip.CurveLog(os.path.join(workdir, "metrics.jsonl"), config.curve_every, start)  # every fit's curves
  try:
    fit = fitting_curves(config, workdir, log)
    den, inp = (restoration(config, task, workdir, log) for task in ("denoise", "inpaint"))
  finally:
    log.close()
  strip = lambda res: {**res, "runs": [{k: v for k, v in r.items() if k != "images"} for r in res["runs"]]}  # noqa
  results = {"paper_config_params": analysis.count_params(analysis.abstract_variables(paper_net, (
      1, 64, 64, 32))["params"]), "fit_steps": config.fit_steps, "fitting": fit, "denoise": strip(den),
             "inpaint": strip(inp), "curve_every": config.curve_every, "smoke_test": config.smoke_test,
             "figures": _figures(config, fit, den, inp, workdir)}
  results["seconds"] = time.time() - start
  return reporting.publish(workdir, results, render(results, config))


def render(results: dict, config: ml_collections.ConfigDict) -> str:
  """results.md: networks, verdicts, fitting, denoising and inpainting tables, the paper."""
  fit, den, inp = results["fitting"], results["denoise"], results["inpaint"]
  fit_rows = [[name, _ms(v["steps"], 0), ", ".join(f"{s or f'>{config.fit_steps}'}" for s in v["steps"]),
               _ms(v["steps_run"], 0)] for name, v in fit.items()]
  n, m, floor = (fit["image + noise"][k][0] for k in ("steps_run", "final_loss", "mse_to_clean"))
  tail = (f"\nSeed {config.seed_base}'s *image + noise* fit ran {n} steps to MSE {m:.4f}, "
          f"{'below' if m < floor else 'above'} the noise's {floor:.4f}: below it, the net fits noise.\n")
  heads = ["method", "PSNR (mean ± std)", "skip net at its stop minus this (paired, 95% CI)", "note"]
  return "\n".join([
      "# Deep Image Prior: an untrained conv net as the image prior\n",
      f"Photos {', '.join(f'`{i}`' for i in config.images)} (seed i takes photo i mod {len(config.images)}), central "
      f"{config.crop:g} crop at {config.size}x{config.size}; skip net width {config.width}, depth {config.depth}, "
      f"skip {config.skip_width} (the paper's net: {results['paper_config_params']:,}); parameters "
      + ", ".join(f"{n} **{r['num_params']:,}**" for n, r in den["runs"][0]["nets"].items())
      + f". Adam lr {config.learning_rate:g}, input-noise std {config.reg_noise_std:.4g}, EMA decay "
      f"{config.ema_decay:g}. {config.num_seeds} seeds for denoising and inpainting, {config.fit_seeds} for the "
      f"fitting curves, from seed {config.seed_base}; the first {config.full_seeds} run(s) every step past the stop. "
      f"Run time {results['seconds']:.0f} s.\n",
      tables.verdicts_section(CLAIMS, results),
      f"## Fitting curves (paper Fig. 2): steps to MSE <= {config.fit_mse:g}, no input noise\n",
      reporting.markdown_table(["target", "steps (mean ± std)", "per seed", "steps run"], fit_rows), tail,
      f"## Denoising, sigma = {config.sigma * 255:.0f}/255: PSNR to the clean photo (dB)\n",
      reporting.markdown_table(heads, _restoration_rows(den, config.full_seeds)),
      f"\n## Inpainting, {config.drop_fraction:.0%} of pixels dropped: PSNR to the clean photo (dB)\n",
      reporting.markdown_table(heads, _restoration_rows(inp, config.full_seeds)),
      "\nOnly oracle rows look at the clean photo; classical parameters come from the known sigma or the corrupted "
      f"photo alone (`cnnlab.ops.restoration`). The paper reports {PAPER['psnr']:.2f} dB ({PAPER['params']:.2g} "
      f"parameters, {PAPER['images']} photos of ~512 px): not comparable with {config.size} px photos.\n",
      "\n".join(f"![{f}]({f})" for f in results["figures"]) + "\n"])


def _judge_fitting(results: dict) -> ledger.Finding:
  fit, cap = results["fitting"], results["fit_steps"]
  # A fit that never got there took more than `cap` steps: the cap is a lower bound (against the claim).
  log_steps = {k: np.log2([s if s is not None else cap for s in v["steps"]]) for k, v in fit.items()}
  verdict, effects = stats.judge(_RULE_FITTING, [(f"{k} / image", stats.paired(log_steps[k], log_steps["image"]))
                                                 for k in FIT_TARGETS[1:]], unit=" (log2)", digits=2)
  steps = ", ".join(f"{k} {np.mean(2 ** v):.0f}" for k, v in log_steps.items())
  return ledger.Finding(f"steps to MSE 0.01 (geometric mean): {steps}; {effects}", verdict)


def _judge_prior(results: dict) -> ledger.Finding:
  get = lambda t, n: [r["nets"][n]["stop_psnr"] for r in results[t]["runs"]]  # noqa: E731
  verdict, effects = stats.judge(_RULE_PRIOR, [(f"{t} DIP − {n}", stats.paired(get(t, DIP), get(t, n)))
                                               for t in ("denoise", "inpaint") for n in NETS[1:]], unit=" dB", digits=2)
  means = "; ".join(f"{t}: " + ", ".join(f"{n} {np.mean(get(t, n)):.2f}" for n in NETS) for t in ("denoise", "inpaint"))
  return ledger.Finding(f"PSNR (dB) at the stop: {means}; {effects}", verdict)


CLAIMS = [
    ledger.Claim("image_prior_fitting", "An untrained conv net fits a natural image faster than the same image with "
                 "noise, its pixels shuffled, or pure noise.", "Ulyanov, Vedaldi & Lempitsky 2018 (Fig. 2)",
                 "Adam steps of the skip net to MSE 0.01 on each target, 10 seeds (photos, inits); supported if every "
                 "log2 step ratio to the clean photo's has its lower 95 % bound (Holm) above log2 1.25",
                 _judge_fitting, rule=_RULE_FITTING),
    ledger.Claim("deep_image_prior", "The structure of a conv net is an image prior: fitted to one corrupted photo and "
                 "stopped early, it denoises and inpaints it better than nets without a spatial prior.",
                 "Ulyanov, Vedaldi & Lempitsky 2018", "PSNR to the clean photo, 10 seeds (photos, corruptions, "
                 "inits), of the skip net minus free pixels and a per-pixel MLP, all stopped by rules blind to the "
                 "clean photo (denoising sigma 25/255: loss <= sigma^2; 50% inpainting: last step); supported if "
                 "every lower 95 % bound (Holm) clears 0.5 dB", _judge_prior, rule=_RULE_PRIOR),
]
