"""Classic filters built on the conv op agree with scipy.ndimage and scikit-image."""

import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.data
import skimage.feature
import skimage.metrics

from cnnlab.metrics import image as image_metrics
from cnnlab.ops import classic_kernels as kernels
from cnnlab.errors import UserError

IMG = skimage.data.camera()[180:228, 200:260].astype(np.float64) / 255.0  # 48x60: rectangular on purpose.


@pytest.mark.parametrize("mode", sorted(kernels.PAD_MODES))
def test_gaussian_matches_scipy(mode):
  for sigma in (0.7, 2.0):
    np.testing.assert_allclose(kernels.gaussian_filter(IMG, sigma, mode, cval=0.3),
                               ndi.gaussian_filter(IMG, sigma, mode=mode, cval=0.3), atol=1e-6)


def test_2d_gaussian_kernel_equals_separable_filter():
  k2 = kernels.gaussian_kernel2d(1.3)
  assert k2.shape == (11, 11) and np.isclose(k2.sum(), 1.0)
  np.testing.assert_allclose(kernels.filter2d(IMG, k2), kernels.gaussian_filter(IMG, 1.3), atol=1e-6)


def test_filter2d_is_ndimage_correlate_for_even_kernels():
  ker = np.arange(12, dtype=np.float64).reshape(3, 4) - 5.0
  np.testing.assert_allclose(kernels.filter2d(IMG, ker, "nearest"), ndi.correlate(IMG, ker, mode="nearest"),
                             atol=1e-5)


def test_sobel_matches_scipy_and_finds_a_step():
  for axis in (0, 1):
    np.testing.assert_allclose(kernels.sobel(IMG, axis), ndi.sobel(IMG, axis=axis), atol=1e-6)
  step = np.zeros((12, 12))
  step[:, 6:] = 1.0
  mag = np.asarray(kernels.sobel_magnitude(step))
  assert set(np.flatnonzero(mag.max(0) > 0)) == {5, 6}  # Only the two columns astride the step respond.


def test_harris_matches_skimage():
  ours = np.asarray(kernels.harris_response(IMG, sigma=1.5, k=0.04))
  theirs = skimage.feature.corner_harris(IMG, sigma=1.5, k=0.04)
  np.testing.assert_allclose(ours, theirs, atol=1e-5 * np.abs(theirs).max())
  peaks = kernels.find_peaks(ours, min_distance=3, threshold_rel=0.05)
  ref = skimage.feature.corner_peaks(theirs, min_distance=3, threshold_rel=0.05)
  assert len(peaks) > 0 and sorted(map(tuple, peaks)) == sorted(map(tuple, ref))


def test_harris_finds_the_corners_of_a_square():
  img = np.zeros((32, 32))
  img[8:24, 8:24] = 1.0
  peaks = kernels.find_peaks(kernels.harris_response(img), min_distance=4, threshold_rel=0.1)
  corners = np.array([(8, 8), (8, 23), (23, 8), (23, 23)])
  assert len(peaks) == 4
  assert np.abs(peaks[:, None] - corners[None]).max(-1).min(1).max() <= 1


def test_psnr_and_errors():
  noisy = IMG + 0.05 * np.random.default_rng(0).standard_normal(IMG.shape)
  assert np.isclose(float(image_metrics.psnr(noisy, IMG)), skimage.metrics.peak_signal_noise_ratio(IMG, noisy, data_range=1.0))
  with pytest.raises(UserError, match="boundary mode"):
    kernels.gaussian_filter(IMG, 1.0, mode="bogus")
  with pytest.raises(UserError, match="sigma"):
    kernels.gaussian_kernel1d(0.0)
