"""PSNR / MSE against independent references (scikit-image, the textbook formula)."""

import numpy as np
import pytest
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio

from cnnlab.metrics import image as image_metrics


@pytest.mark.parametrize("shape", [(8, 8, 1), (16, 12, 3)])
@pytest.mark.parametrize("noise", [0.01, 0.1, 0.3])
def test_psnr_matches_skimage(shape, noise):
  rng = np.random.default_rng(0)
  clean = rng.random(shape).astype(np.float32)
  noisy = np.clip(clean + noise * rng.normal(size=shape), 0, 1).astype(np.float32)
  expected = peak_signal_noise_ratio(clean.astype(np.float64), noisy.astype(np.float64), data_range=1.0)
  np.testing.assert_allclose(float(image_metrics.psnr(noisy, clean)), expected, rtol=1e-5)
  np.testing.assert_allclose(float(image_metrics.mse(noisy, clean)), mean_squared_error(clean, noisy), rtol=1e-5)


def test_psnr_formula_and_data_range():
  # A constant error e on [0, 255] data: PSNR = 20 log10(255 / e).
  x = np.full((4, 4, 3), 100.0, np.float32)
  np.testing.assert_allclose(float(image_metrics.psnr(x + 5.0, x, data_range=255.0)), 20 * np.log10(255 / 5),
                             rtol=1e-6)
  np.testing.assert_allclose(float(image_metrics.psnr_from_mse(np.float32(0.01))), 20.0, rtol=1e-6)
  assert np.isinf(float(image_metrics.psnr(x, x)))


def test_psnr_per_image_over_axes():
  rng = np.random.default_rng(1)
  a, b = rng.random((3, 8, 8, 3)), rng.random((3, 8, 8, 3))
  per_image = np.asarray(image_metrics.psnr(a, b, axis=(1, 2, 3)))
  expected = [peak_signal_noise_ratio(b[i], a[i], data_range=1.0) for i in range(3)]
  np.testing.assert_allclose(per_image, expected, rtol=1e-5)
