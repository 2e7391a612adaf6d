"""An untrained conv net is an image prior: it fits a photo faster than noise, so stopping early denoises and inpaints.

After Ulyanov, Vedaldi & Lempitsky, "Deep Image Prior" (CVPR 2018). A randomly initialised "skip" hourglass
maps a fixed random code z to an image and is fitted by Adam to one corrupted photo; the clean photo is used
only to score. Three parts: fitting curves (photo, photo + noise, shuffled pixels, uniform noise: steps to a
fixed MSE), denoising (sigma = 25/255: PSNR vs step, peak, a no-oracle stopping rule, output averaging) and
inpainting (50% of pixels dropped), each against a Gaussian-blur baseline with the best blur width and two nets
without a spatial prior (free pixels; a per-pixel MLP on z). Seeds: 3 for denoising and inpainting, 1 for the
fitting curves; about 6,300 steps of the skip net in all. The CLAIMS judges turn the PSNRs and step counts into
verdicts. The paper's PSNR (2.2M parameters, ~512 px, 9 images) is not comparable in absolute terms.

Command:  python run.py --exp=deep_image_prior
Result:   see REPORT.md (ledger) and the run's results.md.
"""

import json
import os
import re
import time
from typing import Callable

import jax
import ml_collections
import numpy as np

import experiments
from cnnlab.data import images
from cnnlab.metrics import image as image_metrics
from cnnlab.ops import analysis
from cnnlab.report import figures, ledger, rendering as reporting, tables, verdicts
from cnnlab.training import dip, sweep
from cnnlab import models as model_lib
from cnnlab.errors import UserError

PAPER = {"psnr": 29.22, "steps": 1800, "params": 2.2e6, "images": 9}  # Ulyanov et al. 2018, sigma=25 denoising.
FIT_TARGETS = ("image", "image + noise", "shuffled pixels", "uniform noise")
STOP_CHUNK = 10  # steps between loss checks of a fit that stops at a threshold (`fit_stop`)
STRUCTURE = {"DIP (skip net)": "3x3 convs over 4-5 scales, skips, upsampling",
             "free pixels": "none: the image itself is the parameter",
             "per-pixel MLP": "none: 1x1 convs, each pixel sees only its own code"}


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  """Standard: 64 px astronaut, 122k-parameter net, 3 seeds for denoising and inpainting."""
  c = experiments.new_config(quick)
  c.seed = 0                  # run i uses seed + i for the noise draw / mask, the net init and the code z
  c.num_seeds = 3             # seeds for denoising and inpainting (mean ± std over them)
  c.fit_seeds = 1             # seeds for the fitting curves (each seed fits all four targets)
  c.image = "astronaut"       # a bundled photo (cnnlab.data.images.SOURCES)
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
  c.fit_stop = True           # end a fitting curve within STOP_CHUNK steps of fit_mse; image + noise always runs
                              # to fit_steps (it shows the net going on to fit the noise)
  c.denoise_steps = 1000      # steps of each denoising fit (long enough to see PSNR fall as it fits the noise)
  c.inpaint_steps = 800       # steps of each inpainting fit
  c.mlp_width = 32            # width of the per-pixel MLP ablation
  c.mlp_depth = 2             # hidden layers of the per-pixel MLP ablation
  c.blur_sigma_max = 4.0      # Gaussian-blur baseline: best of sigma = 0.1, 0.2, ..., blur_sigma_max
  c.curve_every = 10          # keep every n-th step of the curves in results.json / metrics.jsonl
  if quick:
    c.size, c.width, c.depth, c.code_channels = 32, 16, 2, 8
    c.num_seeds, c.fit_steps, c.denoise_steps, c.inpaint_steps = 2, 40, 60, 60
    c.mlp_width, c.blur_sigma_max, c.curve_every = 8, 1.0, 5
  c.lock()
  return c


def _skip_net(config, channels: int):
  return model_lib.create("dip_skip", width=config.width, depth=config.depth, skip_width=config.skip_width,
                          out_channels=channels, upsample=config.upsample)


def _nets(config, channels: int) -> dict:
  """The DIP net and the two ablations without a spatial prior, by table name."""
  return {"DIP (skip net)": _skip_net(config, channels),
          "free pixels": model_lib.create("dip_pixels", out_channels=channels),
          "per-pixel MLP": model_lib.create("dip_pixel_mlp", width=config.mlp_width, depth=config.mlp_depth,
                                            out_channels=channels)}


def _laps():
  """Seconds since the previous call (the first: since this was made): each trial's fit, restore included."""
  last = [time.time()]

  def lap() -> float:
    now = time.time()
    seconds, last[0] = now - last[0], now
    return seconds
  return lap


def _trial(config, workdir, net, name, seed, target, clean, steps, tags, lap, mask=None, reg_noise=True,
           stop_at=None) -> sweep.Trial:
  """One DIP fit of `net` to `target` (scored against `clean`); its record gains the curves and output images."""
  trial = sweep.Trial(re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"), net,
                      dip.problem(target, clean, seed, config.code_channels, mask), seed,
                      dip.train_config(steps, config.learning_rate), tags,
                      task=dip.task(config.reg_noise_std if reg_noise else 0.0, config.ema_decay),
                      hooks=[dip.stop_at(stop_at, STOP_CHUNK)] if stop_at is not None else [])
  trial.after_fit = lambda state, _: {"curves": dip.curves(sweep.trial_dir(workdir, trial)), "seconds": lap(),
                                      "final_ema": np.asarray(state.ema[0]), "best_out": np.asarray(state.best_out[0])}
  return trial


def fitting_curves(config, clean: np.ndarray, workdir: str, log) -> dict:
  """Paper Fig. 2: steps for the skip net to fit each target to MSE <= fit_mse (no input noise)."""
  net = _skip_net(config, clean.shape[-1])
  out = {name: {"steps": [], "final_mse": [], "steps_run": [], "loss": [], "noise_mse": []} for name in FIT_TARGETS}
  trials, lap = [], _laps()
  for i in range(config.fit_seeds):
    seed = config.seed + i
    rng = np.random.default_rng(seed)
    targets = {"image": clean, "image + noise": images.add_gaussian_noise(clean, config.sigma, rng),
               "shuffled pixels": images.shuffle_pixels(clean, rng),
               "uniform noise": rng.random(clean.shape).astype(np.float32)}
    for name, target in targets.items():
      stop = config.fit_mse if config.fit_stop and name != "image + noise" else None
      trials.append(_trial(config, workdir, net, f"fit {name} s{seed}", seed, target, target, config.fit_steps,
                           {"target": name, "noise_mse": float(image_metrics.mse(target, clean))}, lap,
                           reg_noise=False, stop_at=stop))
  for r in sweep.run_trials(workdir, trials, progress=False):
    c, res = r["curves"], out[r["target"]]
    res["steps"].append(dip.steps_to_reach(c["loss"], config.fit_mse))
    res["final_mse"].append(float(c["loss"][-1]))
    res["steps_run"].append(len(c["loss"]))
    res["loss"].append(c["loss"])
    res["noise_mse"].append(r["noise_mse"])
    log("fit", r["target"], r["seed"], c)
  return out


def restoration(config, clean: np.ndarray, task: str, workdir: str, log) -> dict:
  """Denoising or inpainting of `clean` with each net and the blur baseline, over num_seeds seeds."""
  nets = _nets(config, clean.shape[-1])
  steps = config.denoise_steps if task == "denoise" else config.inpaint_steps
  sigmas = np.round(np.arange(1, int(round(config.blur_sigma_max * 10)) + 1) / 10, 2)
  runs, trials, lap = [], [], _laps()
  for i in range(config.num_seeds):
    seed = config.seed + i
    rng = np.random.default_rng(seed)
    if task == "denoise":
      corrupted, mask = images.add_gaussian_noise(clean, config.sigma, rng), None
      blur = [images.gaussian_blur(corrupted, s) for s in sigmas]
    else:
      corrupted, mask = images.drop_pixels(clean, config.drop_fraction, rng)
      blur = [images.fill_by_blur(corrupted, mask, s) for s in sigmas]
    blur_psnr = [float(image_metrics.psnr(b, clean)) for b in blur]
    best = int(np.argmax(blur_psnr))  # Oracle choice of the blur width: the baseline at its best.
    runs.append({"seed": seed, "input_psnr": float(image_metrics.psnr(corrupted, clean)),
                 "blur_psnr": blur_psnr[best], "blur_sigma": float(sigmas[best]), "nets": {},
                 "images": {"corrupted": corrupted, "blur": blur[best]}})
    # The ablations fit without input noise: at std 1/30 it drowns the per-pixel MLP's U(0, 0.1) code.
    trials += [_trial(config, workdir, net, f"{task} {name} s{seed}", seed, corrupted, clean, steps,
                      {"run": i, "net": name}, lap, mask=mask, reg_noise=name.startswith("DIP"))
               for name, net in nets.items()]
  for r in sweep.run_trials(workdir, trials, progress=False):
    run, name, c = runs[r["run"]], r["net"], r["curves"]
    res = {"peak_psnr": float(c["psnr"].max()), "peak_step": int(c["psnr"].argmax()) + 1,
           "final_psnr": float(c["psnr"][-1]),
           "ema_final_psnr": float(c["psnr_ema"][-1]), "ema_peak_psnr": float(c["psnr_ema"].max()),
           "num_params": r["params"], "seconds": r["seconds"], "psnr_curve": c["psnr"],
           "ema_curve": c["psnr_ema"], "final_loss": float(c["loss"][-1])}
    if task == "denoise":
      # Discrepancy principle: stop once the fit is as close to the noisy image as the noise level allows.
      stop = dip.steps_to_reach(c["loss"], config.sigma ** 2)
      res["stop_step"] = stop
      res["stop_psnr"] = float(c["psnr"][stop - 1]) if stop else float("nan")
      res["stop_ema_psnr"] = float(c["psnr_ema"][stop - 1]) if stop else float("nan")
    run["nets"][name] = res
    if name.startswith("DIP"):
      run["images"]["dip_best"], run["images"]["dip_ema"] = r["best_out"], r["final_ema"]
    log(task, name, r["seed"], c)
  return {"runs": runs, "steps": steps}


def _ms(values, digits: int = 2) -> str:
  values = [v for v in values if v is not None and np.isfinite(v)]
  return reporting.fmt_mean_std(values, digits=digits) if values else "n/a"


def _restoration_rows(res: dict, task: str) -> list[list]:
  runs = res["runs"]
  rows = [["corrupted input", _ms([r["input_psnr"] for r in runs]), ""],
          ["Gaussian blur, best sigma (oracle)", _ms([r["blur_psnr"] for r in runs]),
           "sigma " + ", ".join(f"{r['blur_sigma']:g}" for r in runs)]]
  for name in runs[0]["nets"]:
    get = lambda k: [r["nets"][name][k] for r in runs]  # pylint: disable=cell-var-from-loop
    rows.append([f"{name}: peak (oracle step)", _ms(get("peak_psnr")), f"step {_ms(get('peak_step'), 0)}"])
    if task == "denoise" and name.startswith("DIP"):
      rows.append([f"{name}: early stop at loss <= sigma^2", _ms(get("stop_psnr")), f"step {_ms(get('stop_step'), 0)}"])
      rows.append([f"{name}: EMA at that step", _ms(get("stop_ema_psnr")), ""])
    if name.startswith("DIP"):
      rows.append([f"{name}: EMA after all steps", _ms(get("ema_final_psnr")), f"step {res['steps']}"])
    rows.append([f"{name}: after all steps", _ms(get("final_psnr")),
                 f"step {res['steps']}; MSE to the corrupted image {_ms(get('final_loss'), 5)}"])
  return rows


def _checks(results: dict) -> list[tuple[str, bool, str]]:
  """(claim, holds, evidence) for each qualitative claim of the paper, from the measurements in `results`."""
  fit, cap = results["fitting"], results["fit_steps"]
  steps = {k: np.mean([s if s is not None else np.inf for s in v["steps"]]) for k, v in fit.items()}
  a, b, c, d = (steps[k] for k in FIT_TARGETS)
  # c ≈ d: within a factor 2 in steps, or (if neither got there) in the MSE left at the cap.
  if np.isfinite(c) and np.isfinite(d):
    ratio, what = c / d, "steps shuffled/noise"
  else:
    ratio = np.mean(fit["shuffled pixels"]["final_mse"]) / np.mean(fit["uniform noise"]["final_mse"])
    what = "final MSE shuffled/noise"
  c_eq_d = bool(np.isfinite(c) == np.isfinite(d) and 0.5 < ratio < 2)
  mean = lambda runs, f: float(np.mean([f(r) for r in runs]))
  fmt = lambda s: f"{s:.0f}" if np.isfinite(s) else f">{cap}"
  dr, ir = results["denoise"]["runs"], results["inpaint"]["runs"]
  peak = lambda runs, n: mean(runs, lambda r: r["nets"][n]["peak_psnr"])
  final = lambda runs, n: mean(runs, lambda r: r["nets"][n]["final_psnr"])
  dipn = "DIP (skip net)"
  prior_gain = min(peak(dr, dipn) - peak(dr, n) for n in dr[0]["nets"] if n != dipn)
  inp_gain = min(final(ir, dipn) - final(ir, n) for n in ir[0]["nets"] if n != dipn)
  return [
      ("fitting: image < image + noise < shuffled ≈ uniform noise (steps)",
       bool(a < b < min(c, d) and c_eq_d),
       f"steps {fmt(a)}, {fmt(b)}, {fmt(c)}, {fmt(d)}; {what} = {ratio:.2f}"),
      ("denoising: PSNR rises above the input, peaks, then falls (>= 0.5 dB) as the net fits the noise",
       bool(peak(dr, dipn) > mean(dr, lambda r: r["input_psnr"]) and peak(dr, dipn) - final(dr, dipn) >= 0.5),
       f"input {mean(dr, lambda r: r['input_psnr']):.2f}, peak {peak(dr, dipn):.2f}, final {final(dr, dipn):.2f} dB"),
      ("denoising: the conv net's peak beats both nets without a spatial prior", bool(prior_gain > 0),
       f"margin {prior_gain:+.2f} dB over the better ablation"),
      ("denoising: DIP peak beats the best Gaussian blur", bool(peak(dr, dipn) > mean(dr, lambda r: r["blur_psnr"])),
       f"{peak(dr, dipn):.2f} vs {mean(dr, lambda r: r['blur_psnr']):.2f} dB"),
      ("inpainting: DIP (after all steps) beats both nets without a spatial prior", bool(inp_gain > 0),
       f"margin {inp_gain:+.2f} dB"),
      ("inpainting: DIP (after all steps) beats the best blur fill",
       bool(final(ir, dipn) > mean(ir, lambda r: r["blur_psnr"])),
       f"{final(ir, dipn):.2f} vs {mean(ir, lambda r: r['blur_psnr']):.2f} dB"),
  ]


def _figures(config, clean, fit, den, inp, workdir) -> list[str]:
  fig, axes = reporting.new_figure(1, 3, figsize=(15, 4))
  for name in FIT_TARGETS:
    axes[0].plot(np.arange(1, len(fit[name]["loss"][0]) + 1), fit[name]["loss"][0], label=name)
  axes[0].axhline(config.fit_mse, color="k", ls=":", label=f"MSE {config.fit_mse:g}")
  axes[0].set(yscale="log", xlabel="step", ylabel="MSE to the target", title="fitting curves (seed 0)")
  axes[0].legend(fontsize=8)
  for ax, res, title in ((axes[1], den, "denoising"), (axes[2], inp, "inpainting")):
    for i, run in enumerate(res["runs"]):
      for j, (name, r) in enumerate(run["nets"].items()):
        x = np.arange(1, len(r["psnr_curve"]) + 1)
        ax.plot(x, r["psnr_curve"], color=f"C{j}", lw=1, alpha=0.8, label=name if i == 0 else None)
        if name.startswith("DIP") and i == 0:
          ax.plot(x, r["ema_curve"], color=f"C{j}", ls="--", lw=1, label=f"{name}, EMA")
    ax.axhline(np.mean([r["input_psnr"] for r in res["runs"]]), color="gray", ls=":", label="corrupted input")
    ax.axhline(np.mean([r["blur_psnr"] for r in res["runs"]]), color="k", ls="-.", label="best blur")
    ax.set(xlabel="step", ylabel="PSNR to the clean image (dB)", title=f"{title} ({len(res['runs'])} seeds)")
    ax.legend(fontsize=7)
  names = [reporting.save_figure(fig, workdir, "curves")]
  fig, axes = reporting.new_figure(2, 5, figsize=(13, 5.6))
  for row, (res, task) in enumerate(((den, "noisy"), (inp, "masked"))):
    run = res["runs"][0]
    dipr = run["nets"]["DIP (skip net)"]
    figures.image_panels(axes[row], [
        (clean, "clean"), (run["images"]["corrupted"], f"{task} {run['input_psnr']:.2f} dB"),
        (run["images"]["blur"], f"blur s={run['blur_sigma']:g} {run['blur_psnr']:.2f} dB"),
        (run["images"]["dip_best"], f"DIP best step {dipr['peak_step']} {dipr['peak_psnr']:.2f} dB"),
        (run["images"]["dip_ema"], f"DIP EMA final {dipr['ema_final_psnr']:.2f} dB")])
  names.append(reporting.save_figure(fig, workdir, "images"))
  return names


def _strip(res: dict, every: int) -> dict:
  """Results without images, with curves thinned to every n-th step (the JSON stays small)."""
  runs = []
  for run in res["runs"]:
    nets = {n: {k: (v[::every].tolist() if k.endswith("curve") else v) for k, v in r.items()}
            for n, r in run["nets"].items()}
    runs.append({**{k: v for k, v in run.items() if k not in ("images", "nets")}, "nets": nets})
  return {"steps": res["steps"], "curve_every": every, "runs": runs}


def measure(config: ml_collections.ConfigDict, workdir: str, clean: np.ndarray, start: float) -> tuple[dict, tuple]:
  """Parameter counts, fitting curves, denoising and inpainting PSNRs; also (fit, den, inp) in full for the figures.

  Writes every fit's curves to metrics.jsonl and one progress line per fit (seconds since `start`).
  """
  num_params = analysis.count_params(analysis.abstract_variables(_skip_net(config, clean.shape[-1]), (
      1, config.size, config.size, config.code_channels))["params"])
  paper_net = model_lib.create("dip_skip", width=128, depth=5, skip_width=4, out_channels=3)
  paper_params = analysis.count_params(analysis.abstract_variables(paper_net, (1, 64, 64, 32))["params"])
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as metrics_file:
    def log(task, method, seed, curves):
      n = len(curves["loss"])
      for t in range(0, n, config.curve_every):
        rec = {"task": task, "method": method, "seed": seed, "step": t + 1}
        metrics_file.write(json.dumps({**rec, **{k: float(v[t]) for k, v in curves.items()}}) + "\n")
      print(f"  {task:8s} {method:16s} seed {seed}: {n} steps, loss {curves['loss'][-1]:.5f}, "
            f"peak PSNR {curves['psnr'].max():.2f} dB  [{time.time() - start:.0f} s]", flush=True)
    fit = fitting_curves(config, clean, workdir, log)
    den = restoration(config, clean, "denoise", workdir, log)
    inp = restoration(config, clean, "inpaint", workdir, log)
  results = {"num_params": num_params, "paper_config_params": paper_params, "fit_steps": config.fit_steps,
             "fitting": {k: {"steps": v["steps"], "final_mse": v["final_mse"], "steps_run": v["steps_run"],
                             "mse_to_clean": v["noise_mse"],
                             "loss_curve": [lc[::config.curve_every].tolist() for lc in v["loss"]]}
                         for k, v in fit.items()},
             "denoise": _strip(den, config.curve_every), "inpaint": _strip(inp, config.curve_every)}
  return results, (fit, den, inp)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Fitting curves, denoising and inpainting; writes results.json, results.md, metrics.jsonl, curves/images PNGs."""
  start = time.time()
  if config.size % 2 ** config.depth:
    raise UserError(f"size {config.size} must be divisible by 2**depth = {2 ** config.depth}")
  if config.num_seeds < 1 or config.fit_seeds < 1:
    raise UserError("num_seeds and fit_seeds must be >= 1")
  clean = images.load(config.image, config.size, config.crop)
  results, (fit, den, inp) = measure(config, workdir, clean, start)
  results["figures"] = _figures(config, clean, fit, den, inp, workdir)
  results["seconds"] = time.time() - start
  results["smoke_test"] = config.smoke_test
  markdown = render(results, config, clean.shape[-1])
  return reporting.publish(workdir, results, markdown)


def render(results: dict, config: ml_collections.ConfigDict, channels: int) -> str:
  """results.md: networks, the paper's claims checked, fitting, denoising and inpainting tables, the paper."""
  fit, den, inp = results["fitting"], results["denoise"], results["inpaint"]
  num_params, paper_params = results["num_params"], results["paper_config_params"]
  floor, below = (float(np.mean(fit["image + noise"][k])) for k in ("mse_to_clean", "final_mse"))
  fit_rows = [[name, ", ".join(str(s) if s is not None else f">{config.fit_steps}" for s in v["steps"]),
               ", ".join(map(str, v["steps_run"])), _ms(v["final_mse"], 5)] for name, v in fit.items()]
  md = ["# Deep Image Prior: an untrained conv net as the image prior\n",
        f"Photo `{config.image}`, central {config.crop:g} crop at {config.size}x{config.size}x{channels}; "
        f"skip net width {config.width}, depth {config.depth}, skip {config.skip_width}: **{num_params:,} "
        f"parameters** (the paper's width-128, depth-5 net: {paper_params:,}). Adam lr {config.learning_rate:g}, "
        f"input-noise std {config.reg_noise_std:.4g}, EMA decay {config.ema_decay:g}. Seeds: {config.num_seeds} for "
        f"denoising and inpainting (noise draw / mask, net init and code z all change with the seed; mean ± std), "
        f"{config.fit_seeds} for the fitting curves (four fits per seed; one keeps the standard run to a few "
        f"minutes, `--config.fit_seeds=3` for more). Run time {results['seconds']:.0f} s ({jax.default_backend()}, "
        f"{os.cpu_count()} CPU cores).\n",
        "## Networks\n",
        reporting.markdown_table(["net", "parameters", "spatial structure"],
                                 [[n, r["num_params"], STRUCTURE[n]] for n, r in den["runs"][0]["nets"].items()]),
        "\n## Claims\n",
        reporting.markdown_table(["claim", "holds", "evidence"],
                                 [[c, "yes" if h else "no", e] for c, h, e in _checks(results)]),
        "\n" + tables.verdicts_section(CLAIMS, results),
        f"## Fitting curves (paper Fig. 2): steps to MSE <= {config.fit_mse:g}, no input noise\n",
        reporting.markdown_table(["target", "steps to the threshold (per seed)", "steps run", "MSE at the last step"],
                                 fit_rows),
        (f"\nA curve ends within {STOP_CHUNK} steps of reaching the threshold (`fit_stop`), except *image + noise*, "
         f"which runs all {config.fit_steps} steps; a curve that never reaches it runs all of them.\n"
         if config.fit_stop else ""),
        f"\nMSE between *image + noise* and the clean photo: {floor:.4f}; fitting below it means fitting noise. "
        f"After {config.fit_steps} steps the net's MSE to it is {below:.4f}, "
        f"{'below' if below < floor else 'still above'} that floor.\n",
        f"\n## Denoising, sigma = {config.sigma * 255:.0f}/255: PSNR to the clean image (dB)\n",
        reporting.markdown_table(["method", "PSNR", "note"], _restoration_rows(den, "denoise")),
        f"\n## Inpainting, {config.drop_fraction:.0%} of pixels dropped: PSNR to the clean image (dB)\n",
        reporting.markdown_table(["method", "PSNR", "note"], _restoration_rows(inp, "inpaint")),
        _paper_section(results, config),
        "\n" + "\n".join(f"![{f}]({f})" for f in results["figures"]) + "\n"]
  return "\n".join(md)


def _paper_section(results: dict, config: ml_collections.ConfigDict) -> str:
  """Our denoising against the paper's, and what the ablations show."""
  den, num_params, paper_params = results["denoise"], results["num_params"], results["paper_config_params"]
  dget = lambda net, key: [r["nets"][net][key] for r in den["runs"]]
  gain_pixels = float(np.mean(dget("free pixels", "peak_psnr")) - np.mean([r["input_psnr"] for r in den["runs"]]))
  mlp_verb = "fits" if np.mean(dget("per-pixel MLP", "final_loss")) <= config.sigma ** 2 else "does not even fit"
  return "\n".join([
      "\n## Against the paper (denoising, sigma = 25/255)\n",
      reporting.markdown_table(
          ["", "parameters", "images", "image size", "steps", "PSNR (dB)"],
          [["Ulyanov et al. 2018", f"{PAPER['params']:.2g}", PAPER["images"], "~512 px", PAPER["steps"],
            f"{PAPER['psnr']:.2f}"],
           ["this run (peak, oracle step)", num_params, 1, f"{config.size} px", den["steps"],
            _ms(dget("DIP (skip net)", "peak_psnr"))]]),
      f"\nOur net has {paper_params / num_params:.0f}x fewer parameters and our images have "
      f"{(512 / config.size) ** 2:.0f}x fewer pixels; at {config.size} px a photo holds more detail per pixel, "
      "so absolute PSNRs are not comparable with the paper's. The oracle rows pick the step or blur width with "
      "the clean image and are upper bounds; the sigma^2 stopping rule and the EMA use only the noisy image. "
      f"The ablations show what is left without spatial structure: free pixels fit the noisy image (MSE "
      f"{_ms(dget('free pixels', 'final_loss'), 5)}) and gain {gain_pixels:+.2f} dB over it at best; the per-pixel "
      f"MLP, seeing one random code vector per pixel, {mlp_verb} it in {den['steps']} steps (MSE "
      f"{_ms(dget('per-pixel MLP', 'final_loss'), 5)}).\n"])


def _judge_checks(select: Callable[[str], bool]) -> Callable[[dict], ledger.Finding]:
  def judge(results: dict) -> ledger.Finding:
    rows = [(c, h, e) for c, h, e in _checks(results) if select(c)]
    held = sum(h for _, h, _ in rows)
    figure = "; ".join(f"{c.split(':')[0]}: {e}" for c, _, e in rows)
    return ledger.Finding(f"{held}/{len(rows)} hold — {figure}", verdicts.from_counts(held, len(rows)))
  return judge


CLAIMS = [
    ledger.Claim("image_prior_fitting", "An untrained conv net fits a natural image faster than the same image with "
                 "noise, its pixels shuffled, or pure noise.", "Ulyanov, Vedaldi & Lempitsky 2018 (Fig. 2)",
                 "Adam steps of the skip net to reach MSE 0.01 on each target; supported if image < image + noise "
                 "< shuffled ~ noise", _judge_checks(lambda c: c.startswith("fitting"))),
    ledger.Claim("deep_image_prior", "The structure of a conv net is an image prior: fitted to one corrupted photo and "
                 "stopped early, it denoises and inpaints it better than nets without a spatial prior.",
                 "Ulyanov, Vedaldi & Lempitsky 2018", "PSNR to the clean photo (3 seeds) of the skip net vs free "
                 "pixels, a per-pixel MLP and the best Gaussian blur, for denoising (sigma 25/255) and 50% "
                 "inpainting", _judge_checks(lambda c: not c.startswith("fitting"))),
]
