"""Model contracts: output shapes, parameter counts (stored for every registered model), plain layer helpers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import models
from cnnlab.models import layers, lenet
from cnnlab.ops import analysis
from cnnlab.errors import UserError

pytestmark = pytest.mark.usefixtures("classic_threefry")  # fast-compiling draws (conftest)

# Parameter count of every registered model with its defaults, at the input shape it is built for.
EXPECTED_PARAMS = {
    "mlp": ((28, 28, 1), 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10),
    "cnn": ((28, 28, 1), (9 * 1 * 16 + 16) + (9 * 16 * 32 + 32) + (7 * 7 * 32 * 10 + 10)),
    "lcn": ((28, 28, 1), (28 * 28 * (9 * 1 * 16 + 16)) + (14 * 14 * (9 * 16 * 32 + 32)) + (7 * 7 * 32 * 10 + 10)),
    "lenet5": ((32, 32, 1), 60_840),
    "alexnet": ((227, 227, 3), 60_965_224),  # Krizhevsky et al. 2012, two-GPU grouping
    "alexnet_ungrouped": ((227, 227, 3), 62_378_344),
    "mnist1d_logistic": ((40, 1), 40 * 10 + 10),
    "mnist1d_mlp": ((40, 1), (40 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)),
    "mnist1d_cnn": ((40, 1), 5_210),  # Greydanus & Kobak's CNN, as their paper states
    "mnist1d_gru": ((40, 1), 5_110),
    "poolnet": ((40, 1), 4_842),
    "deep_mlp": ((28, 28, 1), 84_170),
    "deep_cnn": ((28, 28, 1), 18_890),
    "dip_skip": ((64, 64, 32), 2_217_831),  # the paper's net is "2.2M parameters"
    "dip_pixels": ((64, 64, 32), 64 * 64 * 3),
    "dip_pixel_mlp": ((64, 64, 32), 37_635),
    # Encoder 3x3 convs 1->8->16->32, decoder (3x3 up + 3x3 conv) x 2, 1x1 classifier to 11 classes.
    "segnet": ((32, 32, 1), 80 + 1_168 + 4_640 + 4_624 + 2_320 + 1_160 + 584 + 99),
    "segnet_resize": ((32, 32, 1), 14_675),  # resize + 3x3 conv has the 3x3 transposed conv's parameters
    "unet": ((32, 32, 1), 14_675 + 9 * 16 * 16 + 9 * 8 * 8),  # decoder convs also see the skip channels
    "localiser": ((32, 32, 1), 160 + 4_640 + 9_248 + (4 * 4 * 32 * 32 + 32) + (32 * 14 + 14)),
    "localiser_mlp": ((32, 32, 1), (1024 * 30 + 30) + (30 * 14 + 14)),
    # He et al. 2016's CIFAR ResNets and the CIFAR VGGs (literature figures in tests/test_resnet_vgg.py).
    "resnet20": ((32, 32, 3), 269_722),
    "resnet32": ((32, 32, 3), 464_154),
    "resnet44": ((32, 32, 3), 658_586),
    "resnet56": ((32, 32, 3), 853_018),
    "resnet110": ((32, 32, 3), 1_727_962),
    "resnet18_cifar": ((32, 32, 3), 11_173_962),
    "vgg11_cifar": ((32, 32, 3), 9_231_114),
    "vgg16_cifar": ((32, 32, 3), 14_728_266),
}


def test_every_registered_model_has_a_stored_count():
  assert set(models.MODELS.names()) <= set(EXPECTED_PARAMS), "add new models to EXPECTED_PARAMS"


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_param_count_and_output_shape(name):
  if name not in models.MODELS:
    pytest.skip(f"{name} not registered")
  shape, expected = EXPECTED_PARAMS[name]
  model = models.create(name)
  assert sum(r["params"] for r in analysis.param_table(model, (1, *shape))) == expected
  out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0],
                       jax.ShapeDtypeStruct((2, *shape), jnp.float32))
  assert out.shape[0] == 2


def test_lenet5_is_the_papers_60k_parameters():
  rows = {r["layer"]: r["params"] for r in analysis.param_table(models.create("lenet5"), (1, 32, 32, 1))}
  # LeCun et al. 1998: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164, output 84 x 10.
  assert rows == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164, "RBF": 840}
  assert abs(sum(rows.values()) - 60_000) / 60_000 < 0.02
  acts = {r["layer"]: r["shape"] for r in analysis.activation_table(models.create("lenet5"), (1, 32, 32, 1))}
  assert acts["C1"] == (28, 28, 6) and acts["S2"] == (14, 14, 6) and acts["C3"] == (10, 10, 16)
  assert acts["S4"] == (5, 5, 16) and acts["C5"] == (1, 1, 120) and acts["F6"] == (84,)


class _GroupedC3(nn.Module):
  """C3 as one grouped conv per fan-in over the gathered input maps: the table read literally (the reference)."""

  @nn.compact
  def __call__(self, x):
    outputs = {}
    for fan_in in sorted({len(t) for t in lenet.C3_TABLE}):
      maps = [j for j, t in enumerate(lenet.C3_TABLE) if len(t) == fan_in]
      idx = jnp.array([i for j in maps for i in lenet.C3_TABLE[j]])
      y = nn.Conv(len(maps), (5, 5), padding="VALID", feature_group_count=len(maps), name=f"fan_in{fan_in}")(
          x[..., idx])
      outputs.update({j: y[..., k] for k, j in enumerate(maps)})
    return jnp.stack([outputs[j] for j in range(len(lenet.C3_TABLE))], axis=-1)


def test_lenet5_c3_as_one_masked_dense_conv_equals_the_grouped_convs():
  """Same parameters (names, shapes, init values), outputs and gradients as the connection table read literally."""
  x = jax.random.normal(jax.random.key(1), (4, 14, 14, 6))
  dense, grouped = lenet.SparseConv(), _GroupedC3()
  p = jax.jit(dense.init)(jax.random.key(0), x)  # all jitted: eager ops compile one at a time
  ref = jax.jit(grouped.init)(jax.random.key(0), x)
  assert jax.tree.structure(p) == jax.tree.structure(ref)
  jax.tree.map(np.testing.assert_array_equal, p, ref)
  np.testing.assert_allclose(jax.jit(dense.apply)(p, x), jax.jit(grouped.apply)(p, x), atol=1e-5)
  g = jax.jit(jax.grad(lambda p, x: jnp.sum(dense.apply(p, x) ** 2), argnums=(0, 1)))(p, x)
  g_ref = jax.jit(jax.grad(lambda p, x: jnp.sum(grouped.apply(p, x) ** 2), argnums=(0, 1)))(p, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max())), g, g_ref)
  # A weight outside the table never reaches the output: map 0 sees maps 0-2 only.
  assert float(jnp.abs(jax.jit(jax.grad(lambda x: dense.apply(p, x)[..., 0].sum()))(x)[..., 3:]).max()) == 0.0


def test_lcn_has_more_params_than_cnn_with_same_shapes():
  cnn, lcn = models.create("cnn"), models.create("lcn")
  c_rows, l_rows = analysis.activation_table(cnn, (1, 28, 28, 1)), analysis.activation_table(lcn, (1, 28, 28, 1))
  assert c_rows == l_rows  # same layers, same activation shapes
  assert analysis.count_params(analysis.abstract_variables(lcn, (1, 28, 28, 1))["params"]) > \
      analysis.count_params(analysis.abstract_variables(cnn, (1, 28, 28, 1))["params"])


@pytest.mark.parametrize("name", ["deep_mlp", "deep_cnn"])
def test_deep_nets_kernel_init(name):
  x = jnp.zeros((2, 8, 8, 1))
  init = lambda **kw: jax.jit(models.create(name, depth=3, width=8, **kw).init)(jax.random.key(0), x)["params"]
  default = init()
  # 'lecun' is flax's default: the same weights as a net built before the field existed.
  jax.tree.map(np.testing.assert_array_equal, default, init(kernel_init="lecun"))
  he, orth = init(kernel_init="he"), init(kernel_init="orthogonal")
  # He: variance 2 / fan-in, LeCun's 1 / fan-in, both truncated normals drawn with the same key: exactly sqrt 2 times.
  np.testing.assert_allclose(he["blocks"]["layer"]["kernel"], np.sqrt(2) * default["blocks"]["layer"]["kernel"],
                             rtol=1e-6)
  np.testing.assert_array_equal(he["head"]["kernel"], default["head"]["kernel"])  # the linear head keeps LeCun
  w = np.asarray(orth["blocks"]["layer"]["kernel"][0])
  if name == "deep_cnn":  # delta-orthogonal (Xiao et al. 2018): zero outside the centre tap
    assert np.abs(w).sum() == pytest.approx(np.abs(w[1, 1]).sum())
    w = w[1, 1]
  np.testing.assert_allclose(w.T @ w, 2 * np.eye(8), atol=1e-5)  # orthogonal with gain sqrt 2 (ReLU)
  with pytest.raises(UserError, match="kernel_init"):
    init(kernel_init="xavier")


def test_cnn_works_on_1d_signals():
  model = models.create("cnn", features=(4, 8))
  x = jnp.ones((3, 40, 1))
  y, _ = model.init_with_output(jax.random.key(0), x)
  assert y.shape == (3, 10)


def test_kernel_larger_than_input_is_a_user_error():
  with pytest.raises(UserError, match="larger than"):
    models.create("cnn", kernel_size=9).init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))


def test_global_average_pool():
  x = jax.random.normal(jax.random.key(3), (2, 5, 6, 4))
  np.testing.assert_allclose(layers.global_avg_pool(x), np.asarray(x).mean(axis=(1, 2)), atol=1e-6)
