"""cnnlab's CPU conv paths (slices + one matmul; transposed conv by phases) equal lax/flax, values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cnnlab.kernels import conv_grads
from cnnlab.models import layers

DN = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}

CASES = [  # (input shape, kernel shape, strides, padding, kernel dilation, feature groups)
    ((3, 28, 28, 1), (5, 5, 1, 6), (1, 1), "VALID", (1, 1), 1),
    ((2, 9, 11, 3), (3, 2, 3, 4), (2, 2), "VALID", (1, 1), 1),
    ((2, 10, 13, 2), (3, 3, 2, 5), (2, 1), "SAME", (2, 1), 1),
    ((2, 8, 7, 3), (4, 3, 3, 2), (3, 2), ((2, 1), (0, 3)), (1, 2), 1),
    ((2, 40, 1), (5, 1, 25), (2,), ((1, 1),), (3,), 1),
    ((2, 6, 7, 5, 2), (3, 2, 3, 2, 3), (1, 2, 1), "SAME", (1, 1, 2), 1),
    ((2, 10, 10, 8), (3, 3, 8, 4), (1, 1), "SAME", (1, 1), 1),     # above the channel threshold: lax itself
    ((2, 10, 12, 6), (5, 5, 3, 6), (1, 1), "VALID", (1, 1), 2),    # 2 groups: one conv per group
    ((2, 7, 7, 16), (5, 5, 8, 12), (1, 1), ((2, 2), (2, 2)), (1, 1), 2),
    ((2, 8, 8, 16), (3, 3, 2, 16), (1, 1), "SAME", (1, 1), 8),     # 8 groups: lax itself
    # Unpadded stride-1 convs above the threshold: conv_grads (col2im input gradient, then XLA's).
    ((4, 12, 12, 6), (5, 5, 6, 16), (1, 1), "VALID", (1, 1), 1),
    ((2, 5, 5, 16), (5, 5, 16, 12), (1, 1), "VALID", (1, 1), 1),
    ((2, 10, 9, 16), (3, 2, 16, 4), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),
    ((2, 9, 5), (3, 5, 4), (1,), "VALID", (1,), 1),
    ((2, 5, 6, 4, 4), (3, 3, 2, 4, 3), (1, 1, 1), "VALID", (1, 1, 1), 1),
    ((2, 6, 6, 8), (1, 1, 8, 5), (1, 1), "SAME", (1, 1), 1),       # 1x1 'SAME' pads nothing
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


TRANSPOSE_CASES = [  # (input shape, kernel size, stride, padding per dim)
    ((2, 7, 8), 3, 2, (1, 2)),         # segnets' geometry: exactly doubles the size
    ((2, 5, 5, 8), 3, 2, (1, 2)),
    ((2, 5, 6, 5), 4, 2, (2, 2)),
    ((2, 6, 5, 4), 2, 3, (1, 0)),      # kernel smaller than the stride: some phases have no tap
    ((2, 4, 3, 4, 2), 3, 2, (1, 2)),   # 3-D
]


@pytest.mark.parametrize("x_shape,k,s,pad", TRANSPOSE_CASES)
def test_conv_transpose_equals_flax(x_shape, k, s, pad):
  d = len(x_shape) - 2
  x = jax.random.normal(jax.random.key(0), x_shape)
  ref = nn.ConvTranspose(5, (k,) * d, strides=(s,) * d, padding=[pad] * d)
  fast = layers.ConvTranspose(5, (k,) * d, strides=(s,) * d, padding=[pad] * d)
  params = ref.init(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, fast.init(jax.random.key(1), x), params)
  loss = lambda module: lambda p, x: (module.apply(p, x) ** 2).sum()
  np.testing.assert_allclose(jax.jit(fast.apply)(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
  grads_fast = jax.grad(loss(fast), argnums=(0, 1))(params, x)
  grads_ref = jax.grad(loss(ref), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), grads_fast, grads_ref)
  if jax.default_backend() == "cpu":
    jaxpr = str(jax.make_jaxpr(fast.apply)(params, x))
    assert f"lhs_dilation=({s}," not in jaxpr  # no conv over a zero-dilated input


def test_unpadded_stride1_convs_take_the_matmul_backward_pass():
  def routed(x_shape, w_shape, padding, strides=(1, 1)):
    dn = lax.conv_dimension_numbers(x_shape, w_shape, DN[2])
    f = lambda x, w: layers.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)
    return "custom_vjp" in str(jax.make_jaxpr(f)(np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32)))
  if jax.default_backend() != "cpu":
    pytest.skip("CPU fast path")
  assert routed((2, 12, 12, 6), (5, 5, 6, 16), "VALID")
  assert not routed((2, 12, 12, 6), (5, 5, 6, 16), "SAME")
  assert not routed((2, 12, 12, 6), (5, 5, 6, 16), "VALID", strides=(2, 2))
  # Both input-gradient forms are exercised by the cases above.
  assert conv_grads.col2im_input_grad((4, 12, 12, 6), (5, 5, 6, 16))
  assert conv_grads.col2im_input_grad((2, 5, 5, 16), (5, 5, 16, 12))         # one output pixel
  assert not conv_grads.col2im_input_grad((2, 10, 9, 16), (3, 2, 16, 4))
  assert not conv_grads.col2im_input_grad((128, 24, 24, 6), (5, 5, 6, 16))  # too many products


@pytest.mark.parametrize("shape,window", [((4, 9, 8, 3), 2), ((3, 10, 2), 2), ((2, 9, 9, 3), 3), ((2, 4, 5, 6, 2), 2)])
def test_block_max_equals_reshape_max_bitwise_ties_included(shape, window):
  """`block_max` (max of strided slices, hand-written gradient) gives jnp.max's values and tie-sharing gradient."""
  rng = np.random.default_rng(0)
  x = np.round(np.maximum(rng.standard_normal(shape), 0) * 2).astype(np.float32) / 2  # many exact ties
  ref = lambda x: layers._block_reduce(x, window, jnp.max)  # pylint: disable=protected-access
  y_ref, vjp_ref = jax.vjp(ref, x)
  y, vjp = jax.vjp(jax.jit(lambda x: layers.block_max(x, window)), x)
  ct = rng.standard_normal(y_ref.shape).astype(np.float32)
  np.testing.assert_array_equal(y, y_ref)
  np.testing.assert_array_equal(vjp(ct)[0], vjp_ref(ct)[0])
