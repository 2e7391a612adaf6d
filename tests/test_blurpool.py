"""BlurPool against scipy: binomial taps, blur + subsample per padding mode, 1-D and 2-D, and the stride-1 max."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from scipy.special import comb

from cnnlab.models import blurpool

SCIPY_MODES = {"reflect": "mirror", "zero": "constant", "circular": "wrap"}


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_binomial_taps(size):
  expected = np.array([comb(size - 1, k) for k in range(size)]) / 2 ** (size - 1)
  np.testing.assert_allclose(blurpool.binomial_filter(size), expected)


def _reference(x, size, stride, mode):
  """scipy: correlate every spatial axis with the taps (same alignment as ours), then subsample."""
  taps = blurpool.binomial_filter(size)
  # scipy centres a filter of length k at index k // 2; ours pads (k - 1) // 2 before, so shift the origin.
  origin = (size - 1) // 2 - size // 2
  y = x.astype(np.float64)
  for axis in range(1, x.ndim - 1):
    y = ndimage.correlate1d(y, taps, axis=axis, mode=SCIPY_MODES[mode], origin=origin)
  return y[(slice(None), *(slice(None, None, stride) for _ in range(x.ndim - 2)))]


@pytest.mark.parametrize("mode", sorted(SCIPY_MODES))
@pytest.mark.parametrize("size,stride", [(3, 2), (4, 2), (5, 3), (2, 2)])
@pytest.mark.parametrize("shape", [(2, 9, 3), (2, 10, 7, 2)])
def test_blur_pool_matches_scipy(mode, size, stride, shape):
  x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  got = np.asarray(blurpool.blur_pool(jnp.asarray(x), size, stride, mode))
  want = _reference(x, size, stride, mode)
  assert got.shape == want.shape == (shape[0], *(-(-n // stride) for n in shape[1:-1]), shape[-1])
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_blur_of_constant_is_constant():
  x = jnp.full((1, 8, 8, 3), 2.5)
  np.testing.assert_allclose(blurpool.BlurPool().apply({}, x), 2.5, rtol=1e-6)


def test_max_stride1_matches_scipy_maximum_filter():
  x = np.random.default_rng(1).standard_normal((2, 6, 5, 3)).astype(np.float32)
  want = ndimage.maximum_filter(x, size=(1, 2, 2, 1), origin=(0, -1, -1, 0))[:, :-1, :-1]
  np.testing.assert_allclose(np.asarray(blurpool.max_stride1(jnp.asarray(x))), want)
