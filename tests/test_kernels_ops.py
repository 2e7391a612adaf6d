"""cnnlab.kernels' pooling, LRN, padding and norm kernels equal their plain ops: values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnlab.errors import UserError
from cnnlab.kernels import lrn, norms, padding, pooling
from cnnlab.models import layers

pytestmark = pytest.mark.usefixtures("classic_threefry")  # fast-compiling draws (conftest)


def assert_vjp_equal(fast, ref, x, rtol=1e-5, atol=1e-6):
  """Equal outputs and equal vector-Jacobian products for a random cotangent."""
  y_ref, vjp_ref = jax.vjp(jax.jit(ref), x)  # jitted: eager ops compile one at a time
  y, vjp = jax.vjp(jax.jit(fast), x)
  np.testing.assert_allclose(y, y_ref, rtol=rtol, atol=atol)
  ct = jax.random.normal(jax.random.key(9), y_ref.shape)
  np.testing.assert_allclose(vjp(ct)[0], vjp_ref(ct)[0], rtol=rtol, atol=atol)


@pytest.mark.parametrize("kind,window,stride", [("max", 2, None), ("avg", 2, None), ("max", 3, 3), ("avg", 3, None),
                                                ("max", 2, 1), ("max", 3, 1), ("avg", 2, 1), ("max", 3, 2),
                                                ("none", 2, None)])
@pytest.mark.parametrize("shape", [(2, 9, 7, 3), (2, 8, 8, 1), (3, 11, 2), (2, 5, 4, 6, 2)])
def test_pool_equals_layers_pool(kind, window, stride, shape):
  x = jax.random.normal(jax.random.key(2), shape)  # no ties: where they share a window the gradients differ
  assert_vjp_equal(lambda x: pooling.pool(x, kind, window, stride), lambda x: layers.pool(x, kind, window, stride), x)


def test_plain_pool_is_flax_pooling():
  x = jax.random.normal(jax.random.key(2), (2, 9, 7, 3))
  np.testing.assert_array_equal(layers.pool(x, "max"), nn.max_pool(x, (2, 2), (2, 2)))
  np.testing.assert_array_equal(layers.pool(x, "avg", 3, 1), nn.avg_pool(x, (3, 3), (1, 1)))
  for pool in (layers.pool, pooling.pool):
    with pytest.raises(UserError, match="unknown pooling"):
      pool(x, "median")


@pytest.mark.parametrize("shape,window", [((4, 9, 8, 3), 2), ((3, 10, 2), 2), ((2, 9, 9, 3), 3), ((2, 4, 5, 6, 2), 2)])
def test_block_max_equals_reshape_max_bitwise_ties_included(shape, window):
  """`block_max` (max of strided slices, hand-written gradient) gives jnp.max's values and tie-sharing gradient."""
  rng = np.random.default_rng(0)
  x = np.round(np.maximum(rng.standard_normal(shape), 0) * 2).astype(np.float32) / 2  # many exact ties
  y_ref, vjp_ref = jax.vjp(lambda x: pooling.block_reduce(x, window, jnp.max), x)
  y, vjp = jax.vjp(jax.jit(lambda x: pooling.block_max(x, window)), x)
  ct = rng.standard_normal(y_ref.shape).astype(np.float32)
  np.testing.assert_array_equal(y, y_ref)
  np.testing.assert_array_equal(vjp(ct)[0], vjp_ref(ct)[0])


def test_pool_kernels_trace_no_reduce_window():
  x = jnp.ones((2, 8, 8, 3))
  for args in (("max",), ("avg",), ("max", 2, 1)):
    assert "reduce_window" in str(jax.make_jaxpr(lambda x: layers.pool(x, *args))(x))
    assert "reduce_window" not in str(jax.make_jaxpr(lambda x: pooling.pool(x, *args))(x))


@pytest.mark.parametrize("size,shape", [(5, (2, 3, 3, 10)), (4, (2, 3, 3, 10)), (3, (2, 7, 4))])
def test_lrn_equals_plain_lrn(size, shape):
  """The written-out LRN gradient equals autodiff of the formula (odd and even windows)."""
  x = 30 * jax.random.normal(jax.random.key(0), shape)
  assert_vjp_equal(lambda x: lrn.lrn(x, size, 2.0, 1e-3, 0.75), lambda x: layers.lrn(x, size, 2.0, 1e-3, 0.75), x)
  np.testing.assert_array_equal(lrn.lrn(x), layers.lrn(x))  # the paper's constants, the same forward ops


@pytest.mark.parametrize("pad", [0, 1, 2])
def test_reflect_pad_equals_plain(pad):
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
  assert_vjp_equal(lambda x: padding.reflect_pad(x, pad), lambda x: layers.reflect_pad(x, pad), x, rtol=0, atol=0)
  for reflect_pad in (layers.reflect_pad, padding.reflect_pad):
    with pytest.raises(UserError, match="reflection padding"):
      reflect_pad(x, 5)


def test_global_norm_equals_optax_tree_norm():
  tree = {"big": jax.random.normal(jax.random.key(0), (300, 300)), "small": [jnp.arange(5.0), jnp.ones((2, 3))]}
  np.testing.assert_allclose(norms.global_norm(tree), optax.tree.norm(tree), rtol=1e-6)
  g = jax.grad(norms.global_norm)(tree)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g, jax.grad(optax.tree.norm)(tree))
