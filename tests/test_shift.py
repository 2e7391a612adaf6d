"""Shift ops against numpy/scipy, canvas placement, and the equivariance metric on exact and broken cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage, signal

from cnnlab.ops import shift


@pytest.mark.parametrize("offsets", [(0, 0), (1, 0), (-2, 3), (5, -1)])
def test_shift_matches_numpy_and_scipy(offsets):
  x = np.random.default_rng(0).standard_normal((2, 6, 7, 3)).astype(np.float32)
  np.testing.assert_array_equal(shift.shift(x, offsets, "circular"), np.roll(x, offsets, axis=(1, 2)))
  want = ndimage.shift(x, (0, *offsets, 0), order=0, mode="constant", cval=0.0)
  np.testing.assert_array_equal(shift.shift(x, offsets, "zero"), want)
  np.testing.assert_array_equal(np.asarray(shift.shift(jnp.asarray(x), offsets, "zero")), want)


def test_shift_1d_and_beyond_size():
  x = np.arange(1, 6, dtype=np.float32).reshape(1, 5, 1)
  np.testing.assert_array_equal(shift.shift(x, (2,), "zero")[0, :, 0], [0, 0, 1, 2, 3])
  np.testing.assert_array_equal(shift.shift(x, (-7,), "zero"), 0)


def test_canvas_centres_and_zero_shift_equals_roll_within_margin():
  x = np.random.default_rng(0).random((3, 8, 8, 1)).astype(np.float32)
  c = shift.place_on_canvas(x, 14)
  assert c.shape == (3, 14, 14, 1) and c.sum() == pytest.approx(x.sum())
  np.testing.assert_array_equal(c[:, 3:11, 3:11], x)
  np.testing.assert_array_equal(shift.shift(c, (3, -3), "zero"), shift.shift(c, (3, -3), "circular"))


def _circular_conv(x, k):
  """Per-example circular cross-correlation with scipy (an independent reference conv)."""
  return np.stack([ndimage.correlate(xi[..., 0], k, mode="wrap") for xi in x])[..., None]


def test_equivariance_error_zero_for_circular_conv_and_positive_for_subsampling():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((4, 12, 12, 1))
  k = rng.standard_normal((3, 3))
  conv = lambda v: _circular_conv(v, k)
  assert shift.equivariance_error(conv, x, (1, 2)) < 1e-12
  sub = lambda v: conv(v)[:, ::2, ::2]  # stride-2 conv
  assert shift.equivariance_error(sub, x, (2, 4), stride=2) < 1e-12  # multiples of the stride: exact
  assert shift.equivariance_error(sub, x, (1, 0), stride=2) > 0.1    # odd shift: aliasing breaks it


def test_equivariance_error_of_zero_padded_conv_is_a_border_effect():
  rng = np.random.default_rng(1)
  k = rng.standard_normal((3, 3))
  same = lambda v: np.stack([signal.correlate2d(xi[..., 0], k, mode="same") for xi in v])[..., None]
  noise = rng.standard_normal((2, 10, 10, 1))
  assert shift.equivariance_error(same, noise, (1, 1)) > 0.05
  canvas = shift.place_on_canvas(noise[:, :4, :4], 10)  # content away from the border
  assert shift.equivariance_error(same, canvas, (1, 1)) < 1e-12


def test_relative_error_definition():
  a, b = np.array([3.0, 4.0]), np.array([0.0, 5.0])
  assert shift.relative_error(a, b) == pytest.approx(np.linalg.norm(a - b) / 5.0)


def test_directions_and_random_offsets():
  assert shift.directions(0, 2) == [(0, 0)]
  assert sorted(shift.directions(2, 2)) == [(-2, 0), (0, -2), (0, 2), (2, 0)]
  o = shift.random_offsets(1000, 3, 2, seed=0)
  assert o.min() == -3 and o.max() == 3 and o.shape == (1000, 2)


class _State:
  """A stand-in TrainState whose 'model' predicts the argmax position along the signal."""

  def __init__(self):
    self.params, self.batch_stats = {}, {}
    self.apply_fn = _argmax_apply


def _argmax_apply(variables, x, train=False):
  del variables, train
  return jax.nn.one_hot(jnp.argmax(x[..., 0], axis=1), x.shape[1])


def test_predict_consistency_and_shifted_accuracy():
  x = np.zeros((5, 8, 1), np.float32)
  x[np.arange(5), np.arange(5) + 1, 0] = 1.0
  y = (np.arange(5) + 1).astype(np.int32)
  state = _State()
  np.testing.assert_array_equal(shift.predict(state, x, batch_size=4), y)
  assert shift.shifted_accuracy(state, x, y, 0) == 1.0
  assert shift.shifted_accuracy(state, x, y, 1) == 0.0  # position-coding model: never shift-invariant
  assert shift.consistency(state, x, 0, seed=0) == 1.0
