"""Deep Image Prior: skip-net shapes and parameter arithmetic, images and corruptions, fitting through `train.fit`."""

import dataclasses
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import models
from cnnlab.data import images
from cnnlab.metrics import image as image_metrics
from cnnlab.ops import analysis
from cnnlab.training import dip, steps, train
from cnnlab.errors import Preempted, UserError
from cnnlab.models.dip import BatchStatNorm, reflect_pad


def skip_net_params(code: int, width: int, depth: int, skip: int, out: int, k: int = 3) -> int:
  """The skip net's parameter count from its layers: conv weights + biases, 2 per channel for each norm."""
  conv = lambda cin, cout, kk: kk * kk * cin * cout + cout
  total = 0
  for i in range(depth):
    cin = code if i == 0 else width
    total += conv(cin, skip, 1) + 2 * skip                 # skip branch: 1x1 conv + norm
    total += conv(cin, width, k) + 2 * width               # strided down conv + norm
    total += conv(width, width, k) + 2 * width             # down conv + norm
    total += 2 * (skip + width)                            # norm after the concat
    total += conv(skip + width, width, k) + 2 * width      # up conv + norm
    total += conv(width, width, 1) + 2 * width             # 1x1 up conv + norm
  return total + conv(width, out, 1)


def n_params(model, shape) -> int:
  return analysis.count_params(analysis.abstract_variables(model, shape)["params"])


@pytest.mark.parametrize("code,width,depth,skip,out", [(32, 32, 4, 4, 3), (8, 16, 2, 0, 1), (32, 128, 5, 4, 3)])
def test_skip_net_param_count_from_layer_arithmetic(code, width, depth, skip, out):
  model = models.create("dip_skip", width=width, depth=depth, skip_width=skip, out_channels=out)
  assert n_params(model, (1, 64, 64, code)) == skip_net_params(code, width, depth, skip, out)


def test_paper_config_is_about_2_2m_parameters():
  assert abs(n_params(models.create("dip_skip"), (1, 64, 64, 32)) - 2.2e6) / 2.2e6 < 0.05


def test_skip_net_shapes_and_range():
  model = models.create("dip_skip", width=8, depth=3, out_channels=3)
  out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0],
                       jax.ShapeDtypeStruct((2, 32, 48, 4), jnp.float32))
  assert out.shape == (2, 32, 48, 3)
  acts = {r["layer"]: r["shape"] for r in analysis.activation_table(model, (1, 32, 32, 4))}
  for i in range(3):  # each scale halves the resolution going down and restores it going up
    assert acts[f"down{i}a"] == (32 // 2 ** (i + 1),) * 2 + (8,)
    assert acts[f"skip{i}"] == (32 // 2 ** i,) * 2 + (4,)
    assert acts[f"up{i}b"] == (32 // 2 ** i,) * 2 + (8,)


def test_skip_net_rejects_sizes_not_divisible_by_its_depth():
  with pytest.raises(UserError, match="divisible"):
    jax.eval_shape(lambda x: models.create("dip_skip", depth=3).init(jax.random.key(0), x),
                   jax.ShapeDtypeStruct((1, 20, 20, 2), jnp.float32))


def test_ablation_param_counts():
  assert n_params(models.create("dip_pixels", out_channels=3), (1, 16, 8, 5)) == 16 * 8 * 3
  assert n_params(models.create("dip_pixel_mlp", width=7, depth=2, out_channels=3), (1, 8, 8, 5)) == \
      (5 * 7 + 7) + (7 * 7 + 7) + (7 * 3 + 3)


@pytest.mark.parametrize("pad", [0, 1, 2])
def test_reflect_pad_matches_numpy(pad):
  x = np.random.default_rng(0).random((2, 5, 6, 3)).astype(np.float32)
  np.testing.assert_array_equal(reflect_pad(jnp.asarray(x), pad),
                                np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect"))


def test_batch_stat_norm_standardises_each_channel():
  x = 3.0 + 2.0 * np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype(np.float32)
  y, _ = jax.jit(BatchStatNorm().init_with_output)(jax.random.key(1), x)
  np.testing.assert_allclose(y.mean((0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.std((0, 1, 2)), 1.0, atol=1e-3)


@pytest.mark.parametrize("name", sorted(images.SOURCES))
def test_bundled_images_load_as_unit_range_crops(name):
  img = images.load(name, 32)
  assert img.shape == (32, 32, 1 if name == "camera" else 3) and img.dtype == np.float32
  assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.05


def test_corruptions():
  rng = np.random.default_rng(0)
  img = images.load("astronaut", 32)
  corrupted, mask = images.drop_pixels(img, 0.5, rng)
  assert mask.shape == (32, 32, 1) and abs(mask.mean() - 0.5) < 0.05
  np.testing.assert_array_equal(corrupted, img * mask)
  shuffled = images.shuffle_pixels(img, rng)
  np.testing.assert_array_equal(np.sort(shuffled.reshape(-1, 3), 0), np.sort(img.reshape(-1, 3), 0))
  noisy = images.add_gaussian_noise(img, 0.1, rng)
  assert 0 <= noisy.min() and noisy.max() <= 1 and 0.05 < np.std(noisy - img) < 0.11
  filled = images.fill_by_blur(corrupted, mask, 1.0)
  np.testing.assert_array_equal(filled[mask[..., 0] > 0], img[mask[..., 0] > 0])  # known pixels are kept
  assert image_metrics.psnr(filled, img) > image_metrics.psnr(corrupted, img) + 5


def test_steps_to_reach():
  assert dip.steps_to_reach(np.array([0.5, 0.2, 0.1, 0.05]), 0.1) == 3
  assert dip.steps_to_reach(np.array([0.5, 0.2]), 0.1) is None


def test_masked_mse_ignores_dropped_pixels():
  out, target = jnp.zeros((1, 2, 2, 3)), jnp.ones((1, 2, 2, 3))
  mask = jnp.array([1.0, 0.0, 0.0, 0.0]).reshape(1, 2, 2, 1)
  assert float(dip.masked_mse(out, target.at[0, 1].set(9.0), mask)) == 1.0


TINY = dict(width=16, depth=2, skip_width=4)


def dip_fit(workdir, net, noisy, clean, steps, hooks=(), task=None):
  task = task or dip.task(reg_noise_std=1 / 30)
  state, summary = train.fit(dip.train_config(steps, 0.01), net, dip.problem(noisy, clean, 0, 8), str(workdir), 0,
                             task=task, hooks=hooks)
  return state, summary, dip.curves(str(workdir))


def test_tiny_denoising_fit_beats_the_noisy_input_and_is_reproducible(tmp_path):
  clean = images.load("astronaut", 32)
  noisy = images.add_gaussian_noise(clean, 50 / 255, np.random.default_rng(0))
  net = models.create("dip_skip", out_channels=3, **TINY)
  state, summary, curves = dip_fit(tmp_path / "a", net, noisy, clean, 120)
  noisy_psnr = float(image_metrics.psnr(noisy, clean))
  assert curves["psnr"].shape == (120,) and summary["params"] == skip_net_params(8, 16, 2, 4, 3)
  assert curves["psnr"].max() > noisy_psnr + 1.0  # the net reaches the clean image before the noise
  assert curves["psnr"][0] < noisy_psnr  # ... starting from a grey image far from both
  best = np.asarray(state.best_out[0])
  assert 0.0 <= best.min() and best.max() <= 1.0  # sigmoid output
  np.testing.assert_allclose(float(image_metrics.psnr(best, clean)), curves["psnr"].max(), atol=1e-4)
  _, _, again = dip_fit(tmp_path / "b", net, noisy, clean, 120)  # same seed: same init, code, input-noise draws
  np.testing.assert_array_equal(again["loss"], curves["loss"])
  # A stop hook ends the fit after the first 10 steps whose loss reached it; the steps it ran are the same steps.
  threshold = float(curves["loss"][60])
  reached = dip.steps_to_reach(curves["loss"], threshold)
  _, stopped_summary, stopped = dip_fit(tmp_path / "c", net, noisy, clean, 120, hooks=[dip.stop_at(threshold, 10)])
  assert len(stopped["loss"]) == stopped_summary["steps"] == -(-reached // 10) * 10 < 120
  assert stopped_summary["stopped_early"]
  np.testing.assert_array_equal(stopped["loss"], curves["loss"][:len(stopped["loss"])])
  # Finished fits (stopped early or not) are restored, not retrained.
  restored, again_summary, _ = dip_fit(tmp_path / "c", net, noisy, clean, 120, hooks=[dip.stop_at(threshold, 10)])
  assert again_summary == stopped_summary and int(restored.step) == stopped_summary["steps"]


@pytest.mark.slow  # DIP's own fit task (~30 s); fit's resume is in the default suite
def test_preempted_dip_fit_resumes_exactly(tmp_path):
  """A DIP fit is a `train.fit` run: a SIGTERM checkpoints it and the resumed fit replays the same input noise."""
  clean = images.load("astronaut", 32)
  noisy = images.add_gaussian_noise(clean, 50 / 255, np.random.default_rng(0))
  net = models.create("dip_skip", out_channels=3, **TINY)
  full_state, _, full = dip_fit(tmp_path / "full", net, noisy, clean, 30)
  task = dip.task(reg_noise_std=1 / 30)

  def program_and_signal(*args):
    step_fn, inputs = task.program(*args)

    def signalling():
      for n, step_inputs in enumerate(inputs, 1):
        if n == 12:
          os.kill(os.getpid(), signal.SIGTERM)
        yield step_inputs

    return steps.Program(step_fn, signalling())

  with pytest.raises(Preempted):
    dip_fit(tmp_path / "cut", net, noisy, clean, 30, task=dataclasses.replace(task, program=program_and_signal))
  state, _, resumed = dip_fit(tmp_path / "cut", net, noisy, clean, 30)
  for k in dip.CURVES:
    np.testing.assert_array_equal(resumed[k], full[k])
  np.testing.assert_array_equal(np.asarray(state.ema), np.asarray(full_state.ema))


@pytest.mark.slow  # a trained experiment's quick config (~20-50 s on 2 cores): run by .ci/run after the default suite
def test_quick_experiment_writes_results_and_is_marked_a_smoke_test(run_quick):
  import experiments  # pylint: disable=g-import-not-at-top
  from cnnlab.report import ledger, rendering as reporting  # pylint: disable=g-import-not-at-top
  module = experiments.get("deep_image_prior")
  assert module.get_config(quick=True).code_channels == 8
  config, results, md, workdir = run_quick("deep_image_prior")  # also checks: no verdicts or flags in the results
  assert (config.width, config.depth) == (TINY["width"], TINY["depth"])  # shared compile
  for name in ("config.json", "results.json", "results.md", "metrics.jsonl", "curves.png", "images.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  den = results["denoise"]["runs"]
  assert den[0]["nets"]["DIP (skip net)"]["num_params"] == skip_net_params(8, 16, 2, 4, 3)
  assert results["paper_config_params"] == skip_net_params(32, 128, 5, 4, 3)
  assert [r["seed"] for r in den] == [0, 1] and [r["image"] for r in den] == ["astronaut", "coffee"]
  assert set(den[0]["classical"]) == {"Gaussian blur", "TV (Chambolle)", "wavelet (BayesShrink)",
                                      "non-local means", "BM3D"}
  assert set(results["inpaint"]["runs"][0]["classical"]) == {"blur fill", "biharmonic"}
  # The first seed runs every step; the second stops within 10 steps of its rule where the loss gets there.
  for r in den:
    for net in r["nets"].values():
      stop = net["stop_step"]
      assert net["steps_run"] == (config.denoise_steps if r["seed"] == 0 or stop is None else -(-stop // 10) * 10)
  fit = results["fitting"]
  assert fit["image"]["final_loss"][0] < fit["uniform noise"]["final_loss"][0]  # even a few steps fit the photo
  assert fit["image + noise"]["steps_run"][0] == config.fit_steps  # the full seed's runs on past the threshold
  stored = reporting.read_json(os.path.join(workdir, "results.json"))
  findings = {c.id: c.assess(stored) for c in module.CLAIMS}
  assert all(f"— {f.verdict}.** {f.figure}" in md for f in findings.values()) and "Smoke test" in md
  assert {f.verdict for f in findings.values()} == {ledger.SMOKE_TEST}
  assert all(c.assess({**stored, "smoke_test": False}).verdict in ledger.VERDICTS for c in module.CLAIMS)


def _dip_results(fit_steps: dict, psnr: dict, seeds: int = 10) -> dict:
  """Synthetic results: per target its steps (None: never reached), per task and net its PSNR at the stop."""
  rng = np.random.default_rng(0)
  runs = lambda task: [{"nets": {n: {"stop_psnr": float(p + 0.1 * rng.normal())}  # noqa: E731
                                 for n, p in psnr[task].items()}} for _ in range(seeds)]
  return {"fitting": {k: {"steps": [s if s is None else int(s * (1 + 0.05 * rng.normal())) for _ in range(seeds)]}
                      for k, s in fit_steps.items()}, "fit_steps": 400, "denoise": {"runs": runs("denoise")},
          "inpaint": {"runs": runs("inpaint")}, "smoke_test": False}


def test_judges_on_synthetic_results():
  import experiments  # pylint: disable=g-import-not-at-top
  from cnnlab.report import stats  # pylint: disable=g-import-not-at-top
  claims = {c.id: c for c in experiments.get("deep_image_prior").CLAIMS}
  verdict = lambda claim, r: claims[claim].assess(r).verdict  # noqa: E731
  nets = ("DIP (skip net)", "free pixels", "per-pixel MLP")
  good = {t: dict(zip(nets, (25.0, 21.0, 20.0))) for t in ("denoise", "inpaint")}
  r = _dip_results({"image": 34, "image + noise": 88, "shuffled pixels": 154, "uniform noise": None}, good)
  assert verdict("image_prior_fitting", r) == verdict("deep_image_prior", r) == stats.SUPPORTED
  # Within a tenth of a step count and a tenth of a decibel: no faster, no better (interval below the margins).
  r = _dip_results({k: 100 for k in ("image", "image + noise", "shuffled pixels", "uniform noise")},
                   {t: dict(zip(nets, (21.1, 21.0, 21.0))) for t in ("denoise", "inpaint")})
  assert verdict("image_prior_fitting", r) == verdict("deep_image_prior", r) == stats.REFUTED
  r = _dip_results({"image": 34, "image + noise": 88, "shuffled pixels": 154, "uniform noise": None}, good, seeds=2)
  for task in ("denoise", "inpaint"):  # two seeds that disagree decide nothing
    r[task]["runs"][1]["nets"]["DIP (skip net)"]["stop_psnr"] = 15.0
  r["fitting"]["image"]["steps"] = [34, 400]
  assert verdict("image_prior_fitting", r) == verdict("deep_image_prior", r) == stats.INCONCLUSIVE


def test_summarise_reads_the_stop_from_the_loss_only():
  c = {"loss": np.array([0.5, 0.2, 0.1, 0.05]), "psnr": np.array([10.0, 14.0, 13.0, 12.0]),
       "psnr_ema": np.array([9.0, 10.0, 11.0, 11.5])}
  s = dip.summarise(c, 0.1)
  assert (s["stop_step"], s["stop_psnr"], s["stop_ema_psnr"]) == (3, 13.0, 11.0)
  assert (s["peak_step"], s["peak_psnr"], s["final_psnr"], s["steps_run"]) == (2, 14.0, 12.0, 4)
  never = dip.summarise(c, 0.01)
  assert never["stop_step"] is None and never["stop_psnr"] == 12.0  # never reached: the last step run
  assert dip.summarise(c)["stop_psnr"] == 12.0


def test_seeded_photos_cycle_over_the_photos():
  got = [(i, s, n) for i, s, n, _ in dip.seeded_photos(("astronaut", "coffee", "chelsea"), 4, 3, 16)]
  assert got == [(0, 4, "coffee"), (1, 5, "chelsea"), (2, 6, "astronaut")]


@pytest.mark.parametrize("name", ["camera", "coffee"])  # grey and colour
def test_classical_baselines_restore_without_the_clean_image(name):
  from cnnlab.ops import restoration  # pylint: disable=g-import-not-at-top
  clean = images.load(name, 32)
  widths = np.arange(1, 21) / 10
  noisy, mask, out = restoration.corrupt_and_restore("denoise", clean, np.random.default_rng(0), 25 / 255, 0.5, widths)
  assert mask is None and set(out) == {"Gaussian blur", "TV (Chambolle)", "wavelet (BayesShrink)", "non-local means",
                                       "BM3D"}
  noisy_psnr = float(image_metrics.psnr(noisy, clean))
  for k, v in out.items():
    assert v["image"].shape == clean.shape and v["image"].dtype == np.float32, k
    assert v["psnr"] > noisy_psnr + 1, k  # every one denoises
  assert "(calibrated)" in out["TV (Chambolle)"]["param"]
  corrupted, mask, out = restoration.corrupt_and_restore("inpaint", clean, np.random.default_rng(0), 0.1, 0.5, widths)
  for k, v in out.items():
    known = np.broadcast_to(mask > 0, clean.shape)
    np.testing.assert_allclose(v["image"][known], clean[known], atol=1e-6)  # known pixels are kept
    assert v["psnr"] > float(image_metrics.psnr(corrupted, clean)) + 10, k


def test_config_errors():
  import experiments  # pylint: disable=g-import-not-at-top
  module = experiments.get("deep_image_prior")
  for change in ({"seed_base": -1}, {"images": ("astronaut", "nope")}, {"size": 30}):
    config = module.get_config(quick=True)
    config.update(change)
    with pytest.raises(UserError):
      module.validate_config(config)
