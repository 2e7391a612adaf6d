"""cnnlab's CPU conv path (slices + one matmul) equals lax.conv_general_dilated, values and gradients."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax import lax

from cnnlab import layers

DN = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}

CASES = [  # (input shape, kernel shape, strides, padding, kernel dilation, feature groups)
    ((3, 28, 28, 1), (5, 5, 1, 6), (1, 1), "VALID", (1, 1), 1),
    ((2, 9, 11, 3), (3, 2, 3, 4), (2, 2), "VALID", (1, 1), 1),
    ((2, 10, 13, 2), (3, 3, 2, 5), (2, 1), "SAME", (2, 1), 1),
    ((2, 8, 7, 3), (4, 3, 3, 2), (3, 2), ((2, 1), (0, 3)), (1, 2), 1),
    ((2, 40, 1), (5, 1, 25), (2,), ((1, 1),), (3,), 1),
    ((2, 6, 7, 5, 2), (3, 2, 3, 2, 3), (1, 2, 1), "SAME", (1, 1, 2), 1),
    ((2, 10, 10, 8), (3, 3, 8, 4), (1, 1), "SAME", (1, 1), 1),     # above the channel threshold: lax itself
    ((2, 10, 12, 6), (5, 5, 3, 6), (1, 1), "VALID", (1, 1), 2),    # feature groups: lax itself
]


@pytest.mark.parametrize("x_shape,w_shape,strides,padding,dilation,groups", CASES)
def test_conv_general_dilated_equals_lax(x_shape, w_shape, strides, padding, dilation, groups):
  kx, kw, kc = jax.random.split(jax.random.key(0), 3)
  x, w = jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)
  dn = lax.conv_dimension_numbers(x_shape, w_shape, DN[len(x_shape) - 2])
  kw_ = dict(rhs_dilation=dilation, dimension_numbers=dn, feature_group_count=groups)
  ref = lambda x, w: lax.conv_general_dilated(x, w, strides, padding, **kw_)
  fast = lambda x, w: layers.conv_general_dilated(x, w, strides, padding, **kw_)
  y_ref, vjp_ref = jax.vjp(ref, x, w)
  y_fast, vjp_fast = jax.vjp(jax.jit(fast), x, w)
  assert y_fast.shape == y_ref.shape
  np.testing.assert_allclose(y_fast, y_ref, rtol=1e-5, atol=1e-5)
  ct = jax.random.normal(kc, y_ref.shape)
  for g_fast, g_ref in zip(vjp_fast(ct), vjp_ref(ct)):
    np.testing.assert_allclose(g_fast, g_ref, rtol=1e-4, atol=1e-4)


def test_naive_mode_traces_plain_flax_ops():
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  conv = layers.Conv(4, (3, 3))
  params = conv.init(jax.random.key(0), x)
  fast_jaxpr = str(jax.make_jaxpr(conv.apply)(params, x))
  layers.set_fast_paths(False)
  try:
    naive_jaxpr = str(jax.make_jaxpr(conv.apply)(params, x))
    naive_pool = str(jax.make_jaxpr(lambda x: layers.pool(x, "max"))(x))
    y_naive = conv.apply(params, x)
  finally:
    layers.set_fast_paths(True)
  assert "conv_general_dilated" in naive_jaxpr and "reduce_window" in naive_pool
  if jax.default_backend() == "cpu":
    assert "conv_general_dilated" not in fast_jaxpr
  np.testing.assert_allclose(conv.apply(params, x), y_naive, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y_naive, nn.Conv(4, (3, 3)).apply(params, x), rtol=1e-6, atol=1e-6)
