"""Classical restoration baselines whose parameters are chosen without the clean image.

Denoisers of an (H, W, C) image in [0, 1] with Gaussian noise of known std `sigma`: a method whose parameter is the
noise level gets `sigma` (BM3D, BayesShrink wavelets, non-local means with scikit-image's documented h = 0.6 sigma
for its fast mode); the others (TV weight, blur width) are chosen by scikit-image's J-invariant self-supervised
calibration on the noisy image alone (Batson & Royer 2019). Inpainters of an image with a (H, W, 1) keep-mask:
biharmonic (no parameter) and a blur fill whose width is chosen on known pixels held out from the fill.
"""

from typing import Callable, Sequence

import numpy as np

from cnnlab.data import images
from cnnlab.metrics import image as image_metrics

TV_WEIGHTS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2)  # denoise_tv_chambolle weights tried by the calibration


def _calibrated(x: np.ndarray, fn: Callable, name: str, grid: Sequence[float],
                colour: dict) -> tuple[np.ndarray, float]:
  """fn(x, name=v) for the v of `grid` with the lowest J-invariant self-supervised loss, and that v."""
  from skimage.restoration import calibrate_denoiser  # pylint: disable=g-import-not-at-top
  # The channel axis goes in the grid: calibrate_denoiser masks pixels (not channels) only when it sees it there.
  _, (params, losses) = calibrate_denoiser(x, fn, {name: list(grid), **{k: [v] for k, v in colour.items()}},
                                           extra_output=True)
  best = params[int(np.argmin(losses))]
  return fn(x, **best), float(best[name])


def _blur(img: np.ndarray, width: float, channel_axis: int | None = None) -> np.ndarray:
  del channel_axis  # the blur is per channel
  return images.gaussian_blur(img if img.ndim == 3 else img[..., None], width).reshape(img.shape)


def denoise(noisy: np.ndarray, sigma: float, blur_widths: Sequence[float], bm3d: bool = True) -> dict[str, dict]:
  """{method: {"image", "param"}} for each classical denoiser (BM3D only if `bm3d`)."""
  from skimage import restoration as r  # pylint: disable=g-import-not-at-top
  colour = dict(channel_axis=-1) if noisy.shape[-1] > 1 else {}
  x = noisy if colour else noisy[..., 0]  # scikit-image takes a grey image without its channel axis
  back = (lambda y: np.asarray(y, np.float32)) if colour else (lambda y: np.asarray(y, np.float32)[..., None])
  out = {}
  blurred, width = _calibrated(x, _blur, "width", blur_widths, colour)
  out["Gaussian blur"] = {"image": back(blurred), "param": f"width {width:g} (calibrated)"}
  tv, weight = _calibrated(x, r.denoise_tv_chambolle, "weight", TV_WEIGHTS, colour)
  out["TV (Chambolle)"] = {"image": back(tv), "param": f"weight {weight:g} (calibrated)"}
  out["wavelet (BayesShrink)"] = {"image": back(r.denoise_wavelet(
      x, sigma=sigma, method="BayesShrink", mode="soft", rescale_sigma=True, convert2ycbcr=bool(colour), **colour)),
      "param": "sigma known"}
  out["non-local means"] = {"image": back(r.denoise_nl_means(x, h=0.6 * sigma, sigma=sigma, patch_size=5,
                                                             patch_distance=6, fast_mode=True, **colour)),
                            "param": "h = 0.6 sigma, sigma known"}
  if bm3d:
    import bm3d as bm3d_lib  # pylint: disable=g-import-not-at-top
    fn = bm3d_lib.bm3d_rgb if colour else bm3d_lib.bm3d
    out["BM3D"] = {"image": back(fn(x, sigma)), "param": "sigma known"}
  return {k: {**v, "image": np.clip(v["image"], 0.0, 1.0).astype(np.float32)} for k, v in out.items()}


def inpaint(corrupted: np.ndarray, mask: np.ndarray, blur_widths: Sequence[float], rng: np.random.Generator,
            holdout: float = 0.1) -> dict[str, dict]:
  """{method: {"image", "param"}}: biharmonic inpainting, and a blur fill whose width best fills held-out known
  pixels."""
  from skimage.restoration import inpaint_biharmonic  # pylint: disable=g-import-not-at-top
  held = (mask > 0) & (rng.random(mask.shape) < holdout)  # known pixels the width is chosen on
  fit_mask = np.where(held, 0.0, mask).astype(np.float32)
  errors = [float(np.mean(np.square(images.fill_by_blur(corrupted * fit_mask, fit_mask, w) - corrupted)[held[..., 0]]))
            for w in blur_widths]
  width = float(blur_widths[int(np.argmin(errors))])
  colour = dict(channel_axis=-1) if corrupted.shape[-1] > 1 else {}
  x = corrupted if colour else corrupted[..., 0]
  bih = np.asarray(inpaint_biharmonic(x, mask[..., 0] == 0, **colour), np.float32)
  return {"blur fill": {"image": images.fill_by_blur(corrupted, mask, width), "param": f"width {width:g} (held-out "
                        "known pixels)"},
          "biharmonic": {"image": np.clip(bih if colour else bih[..., None], 0.0, 1.0), "param": "none"}}


def corrupt_and_restore(task: str, clean: np.ndarray, rng: np.random.Generator, sigma: float, drop_fraction: float,
                        blur_widths: Sequence[float], bm3d: bool = True) -> tuple[np.ndarray, np.ndarray | None, dict]:
  """(corrupted, keep-mask or None, {method: {"image", "param", "psnr"}}) of `clean` for 'denoise' or 'inpaint'.

  The methods never see `clean`: it only scores them (PSNR in dB).
  """
  if task == "denoise":
    corrupted, mask = images.add_gaussian_noise(clean, sigma, rng), None
    out = denoise(corrupted, sigma, blur_widths, bm3d)
  else:
    corrupted, mask = images.drop_pixels(clean, drop_fraction, rng)
    out = inpaint(corrupted, mask, blur_widths, rng)
  return corrupted, mask, {k: {**v, "psnr": float(image_metrics.psnr(v["image"], clean))} for k, v in out.items()}
