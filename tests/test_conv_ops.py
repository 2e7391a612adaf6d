"""The three convolutions agree with each other and with scipy; the FLOP counter agrees with XLA."""

import flax.linen as nn
import jax
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings, strategies as st

from cnnlab.ops import conv_ops, flops
from cnnlab.ops.conv_arithmetic import GeometryError


@st.composite
def conv_case(draw):
  """A random valid 1-D or 2-D conv: shapes, strides, padding, dilations, groups."""
  n = draw(st.integers(1, 2))
  g = draw(st.sampled_from([1, 2]))
  cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 2))
  k = [draw(st.integers(1, 3)) for _ in range(n)]
  d = [draw(st.integers(1, 2)) for _ in range(n)]
  s = [draw(st.integers(1, 3)) for _ in range(n)]
  lhs_d = [draw(st.integers(1, 2)) for _ in range(n)] if draw(st.booleans()) else None
  spatial = [draw(st.integers((kt - 1) * dt + 1, 9)) for kt, dt in zip(k, d)]
  if lhs_d is None and draw(st.booleans()):
    padding = draw(st.sampled_from(["SAME", "VALID"]))
  else:
    padding = [(draw(st.integers(-1, 2)), draw(st.integers(0, 2))) for _ in range(n)]
  return (draw(st.integers(1, 2)), *spatial, g * cg), (*k, cg, g * og), dict(
      window_strides=s, padding=padding, lhs_dilation=lhs_d, rhs_dilation=d, feature_group_count=g)


# Jitted with static geometry: XLA compiles each case once instead of op by op.
STATIC = ("window_strides", "padding", "lhs_dilation", "rhs_dilation", "feature_group_count", "precision")
conv_lax = jax.jit(conv_ops.conv_lax, static_argnames=STATIC)
conv_im2col = jax.jit(conv_ops.conv_im2col, static_argnames=STATIC)


@settings(max_examples=20, deadline=None)
@given(conv_case(), st.integers(0, 2**16))
def test_three_convolutions_agree(case, seed):
  x_shape, w_shape, kwargs = case
  rng = np.random.default_rng(seed)
  x = rng.normal(size=x_shape).astype(np.float32)
  w = rng.normal(size=w_shape).astype(np.float32)
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}  # Hashable for jit.
  try:
    ref = conv_ops.conv_direct(x, w, **kwargs)
  except GeometryError:  # Where ours refuses, lax returns an empty array.
    assert conv_lax(x, w, **kwargs).size == 0
    return
  got_lax = conv_lax(x, w, precision="highest", **kwargs)
  got_im2col = conv_im2col(x, w, precision="highest", **kwargs)
  assert got_lax.shape == ref.shape == got_im2col.shape
  np.testing.assert_allclose(got_lax, ref, atol=1e-4)
  np.testing.assert_allclose(got_im2col, ref, atol=1e-4)


def test_im2col_jits_and_differentiates_like_lax():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 10, 10, 4)).astype(np.float32)
  w = rng.normal(size=(3, 3, 2, 6)).astype(np.float32)
  kw = dict(window_strides=(2, 1), padding="SAME", rhs_dilation=(1, 2), feature_group_count=2, precision="highest")
  loss = lambda conv: jax.jit(jax.grad(lambda x, w: (conv(x, w, **kw) ** 2).sum(), argnums=(0, 1)))
  for a, b in zip(loss(conv_ops.conv_im2col)(x, w), loss(conv_ops.conv_lax)(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_cnn_convolution_is_cross_correlation():
  rng = np.random.default_rng(1)
  img = rng.normal(size=(12, 15))
  ker = rng.normal(size=(3, 4))  # Not symmetric, so flipping matters.
  corr = conv_ops.conv_direct(img[None, :, :, None], ker[:, :, None, None])[0, :, :, 0]
  np.testing.assert_allclose(corr, scipy.signal.correlate2d(img, ker, mode="valid"), atol=1e-12)
  true = conv_ops.true_convolution(img[None, :, :, None].astype(np.float32), ker[:, :, None, None].astype(np.float32),
                                   precision="highest")[0, :, :, 0]
  np.testing.assert_allclose(true, scipy.signal.convolve2d(img, ker, mode="valid"), atol=1e-4)
  assert np.abs(corr - scipy.signal.convolve2d(img, ker, mode="valid")).max() > 0.1


def test_im2col_rows_are_receptive_fields():
  x = np.arange(2 * 5 * 5 * 1, dtype=np.float32).reshape(2, 5, 5, 1)
  cols = conv_ops.im2col(x, (3, 3), (2, 2))
  assert cols.shape == (2, 2, 2, 9, 1)
  np.testing.assert_array_equal(cols[1, 1, 0, :, 0], x[1, 2:5, 0:3, 0].ravel())


def test_bad_geometry_is_a_one_line_error():
  x, w = np.zeros((1, 4, 4, 3), np.float32), np.zeros((3, 3, 2, 4), np.float32)
  with pytest.raises(GeometryError, match="groups"):
    conv_ops.conv_im2col(x, w)
  with pytest.raises(GeometryError, match="larger"):
    conv_ops.conv_direct(x, np.zeros((5, 5, 3, 1)))
  with pytest.raises(GeometryError, match="lhs_dilation"):
    conv_ops.conv_im2col(x, np.zeros((3, 3, 3, 1)), padding="SAME", lhs_dilation=(2, 2))


@pytest.mark.parametrize("layer,x_shape,macs", [
    (nn.Conv(8, (5, 5), padding="VALID"), (1, 32, 32, 3), 28 * 28 * 8 * 5 * 5 * 3),
    (nn.Conv(8, (3, 3), strides=2, padding="SAME", feature_group_count=2), (1, 9, 9, 4), 5 * 5 * 8 * 3 * 3 * 2),
    (nn.Dense(7), (1, 5, 6), 5 * 7 * 6),
    (nn.ConvLocal(4, (3, 3), padding="VALID"), (1, 6, 6, 2), 4 * 4 * 4 * 3 * 3 * 2),
])
def test_macs_per_layer(layer, x_shape, macs):
  (row,) = flops.macs_by_layer(layer, x_shape, top_level=False, with_xla=isinstance(layer, (nn.Conv, nn.Dense)))
  assert row["macs"] == macs
  if "xla_flops" in row and row["unpadded_macs"] is not None:
    assert row["xla_flops"] == 2 * row["unpadded_macs"] + row["bias_adds"]
