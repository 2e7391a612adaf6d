"""cnnlab.kernels' convs (dispatcher, Conv, ScanConv, ConvLocal, ConvTranspose) equal lax/flax: values, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cnnlab.kernels import conv, conv_grads, local, scan, transpose

pytestmark = pytest.mark.usefixtures("classic_threefry")  # fast-compiling draws (conftest)

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


def assert_vjp_equal(fast, ref, *args, rtol=1e-4, atol=1e-4):
  """Equal outputs and equal vector-Jacobian products for a random cotangent."""
  y_ref, vjp_ref = jax.vjp(jax.jit(ref), *args)  # jitted: eager ops compile one at a time (seconds per test)
  y_fast, vjp_fast = jax.vjp(jax.jit(fast), *args)
  assert y_fast.shape == y_ref.shape
  np.testing.assert_allclose(y_fast, y_ref, rtol=1e-5, atol=1e-5)
  ct = jax.random.normal(jax.random.key(9), y_ref.shape)
  for g_fast, g_ref in zip(vjp_fast(ct), vjp_ref(ct)):
    np.testing.assert_allclose(g_fast, g_ref, rtol=rtol, atol=atol)


@pytest.mark.parametrize("x_shape,w_shape,strides,padding,dilation,groups", CASES)
def test_conv_general_dilated_equals_lax(x_shape, w_shape, strides, padding, dilation, groups):
  kx, kw = jax.random.split(jax.random.key(0))
  x, w = jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)
  dn = lax.conv_dimension_numbers(x_shape, w_shape, DN[len(x_shape) - 2])
  kw_ = dict(rhs_dilation=dilation, dimension_numbers=dn, feature_group_count=groups)
  assert_vjp_equal(lambda x, w: conv.conv_general_dilated(x, w, strides, padding, **kw_),
                   lambda x, w: lax.conv_general_dilated(x, w, strides, padding, **kw_), x, w)


def assert_module_equal(fast: nn.Module, ref: nn.Module, x):
  """Same initial parameters, outputs and gradients (parameters and input)."""
  params = jax.jit(ref.init)(jax.random.key(0), x)  # all jitted: eager ops compile one at a time
  fast_params = jax.jit(fast.init)(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, fast_params) == jax.tree.map(jnp.shape, params)
  jax.tree.map(np.testing.assert_array_equal, fast_params, params)
  loss = lambda m: lambda p, x: jnp.sum(m.apply(p, x) ** 2)
  np.testing.assert_allclose(jax.jit(fast.apply)(params, x), jax.jit(ref.apply)(params, x), rtol=1e-5, atol=1e-5)
  g_fast = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(params, x)
  g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), g_fast, g_ref)


@pytest.mark.parametrize("shape,kw", [
    ((2, 9, 11, 1), dict(features=4, kernel_size=(3, 3))),
    ((2, 9, 11, 3), dict(features=4, kernel_size=(3, 2), strides=2, padding="VALID")),
    ((2, 12, 1), dict(features=3, kernel_size=(5,), strides=2, padding=1)),
    ((2, 10, 10, 2), dict(features=2, kernel_size=(3, 3), kernel_dilation=2)),
    ((2, 10, 10, 8), dict(features=2, kernel_size=(3, 3))),  # above the threshold: plain lax path
    ((2, 8, 8, 4), dict(features=6, kernel_size=(3, 3), padding="CIRCULAR", feature_group_count=2)),
])
def test_conv_module_equals_flax(shape, kw):
  assert_module_equal(conv.Conv(**kw), nn.Conv(**kw), jax.random.normal(jax.random.key(1), shape))


@pytest.mark.parametrize("shape,kw", [
    ((2, 6, 7, 4), dict(features=5, kernel_size=(3, 3), padding="SAME")),
    ((2, 9, 3), dict(features=2, kernel_size=(3,), padding="SAME")),
    ((2, 6, 6, 3), dict(features=2, kernel_size=(3, 3), strides=2)),  # not stride 1: lax itself
])
def test_scan_conv_equals_flax(shape, kw):
  assert_module_equal(scan.ScanConv(**kw), nn.Conv(**kw), jax.random.normal(jax.random.key(1), shape))


@pytest.mark.parametrize("shape,kw", [
    ((2, 9, 11, 3), dict(features=4, kernel_size=(3, 3))),
    ((2, 9, 11, 3), dict(features=4, kernel_size=(3, 2), strides=2, padding="VALID")),
    ((2, 12, 5), dict(features=3, kernel_size=(5,), strides=2, padding=1)),
    ((2, 10, 10, 2), dict(features=2, kernel_size=(3, 3), kernel_dilation=2)),
    ((2, 6, 6, 2), dict(features=2, kernel_size=(3, 3), padding="CIRCULAR")),  # flax's own code path
])
def test_conv_local_equals_flax(shape, kw):
  assert_module_equal(local.ConvLocal(**kw), nn.ConvLocal(**kw), jax.random.normal(jax.random.key(1), shape))


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
  kw = dict(features=5, kernel_size=(k,) * d, strides=(s,) * d, padding=[pad] * d)
  fast = transpose.ConvTranspose(**kw)
  assert_module_equal(fast, nn.ConvTranspose(**kw), x)
  jaxpr = str(jax.make_jaxpr(fast.apply)(jax.jit(fast.init)(jax.random.key(1), x), x))
  assert f"lhs_dilation=({s}," not in jaxpr  # no conv over a zero-dilated input


def test_kernels_trace_no_plain_ops():
  """The reason for each kernel: the op XLA:CPU runs slowly does not appear in its trace."""
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  plain, fast = nn.Conv(4, (3, 3)), conv.Conv(4, (3, 3))
  params = plain.init(jax.random.key(0), x)
  assert "conv_general_dilated" in str(jax.make_jaxpr(plain.apply)(params, x))
  assert "conv_general_dilated" not in str(jax.make_jaxpr(fast.apply)(params, x))


def test_unpadded_stride1_convs_take_the_matmul_backward_pass():
  def routed(x_shape, w_shape, padding, strides=(1, 1)):
    dn = lax.conv_dimension_numbers(x_shape, w_shape, DN[2])
    f = lambda x, w: conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)
    jaxpr = str(jax.make_jaxpr(f)(np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32)))
    return "name=conv\n" in jaxpr or "name=conv " in jaxpr  # conv_grads.conv, not seeded's lax conv (_conv)
  assert routed((2, 12, 12, 6), (5, 5, 6, 16), "VALID")
  assert not routed((2, 12, 12, 6), (5, 5, 6, 16), "SAME")
  assert not routed((2, 12, 12, 6), (5, 5, 6, 16), "VALID", strides=(2, 2))
  # Both input-gradient forms are exercised by the cases above.
  assert conv_grads.col2im_input_grad((4, 12, 12, 6), (5, 5, 6, 16))
  assert conv_grads.col2im_input_grad((2, 5, 5, 16), (5, 5, 16, 12))         # one output pixel
  assert not conv_grads.col2im_input_grad((2, 10, 9, 16), (3, 2, 16, 4))
  assert not conv_grads.col2im_input_grad((128, 24, 24, 6), (5, 5, 6, 16))  # too many products


@pytest.mark.parametrize("pad,c_in", [("SAME", 8), ("VALID", 6), ("VALID", 2), ("SAME", 2)])
def test_convs_vmapped_over_seeds_equal_per_seed_and_run_ungrouped(pad, c_in):
  """Per-seed weights under vmap (a seeded training): each seed's values and gradients are its unbatched ones,
  and no grouped conv (XLA:CPU's slow form) appears in the vmapped program."""
  seeds, x_shape, w_shape = 3, (4, 9, 9, c_in), (3, 3, c_in, 5)
  dn = lax.conv_dimension_numbers(x_shape, w_shape, DN[2])
  f = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=dn)
  loss = lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  x = jax.random.normal(jax.random.key(0), (seeds, *x_shape))
  w = jax.random.normal(jax.random.key(1), (seeds, *w_shape))
  batched = jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1))))
  value, (dx, dw) = batched(x, w)
  single = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  for i in range(seeds):
    v1, (dx1, dw1) = single(x[i], w[i])
    np.testing.assert_allclose(value[i], v1, rtol=1e-5, atol=1e-4)  # a sum of ~1,600 terms near 0: absolute
    np.testing.assert_allclose(dx[i], dx1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw[i], dw1, rtol=1e-4, atol=1e-4)
  jaxpr = str(jax.make_jaxpr(jax.vmap(jax.grad(loss, argnums=(0, 1))))(x, w))
  assert f"feature_group_count={seeds}" not in jaxpr and f"batch_group_count={seeds}" not in jaxpr
