"""AlexNet's stored counts (from shapes only) and a cheap forward pass on a small input."""

import jax
import numpy as np

from cnnlab import models
from cnnlab.ops import analysis, flops
from cnnlab.models import layers

SHAPE = (1, 227, 227, 3)


def test_registered_parameter_counts():
  for name, expected in (("alexnet", 60_965_224), ("alexnet_ungrouped", 62_378_344)):
    variables = analysis.abstract_variables(models.create(name), SHAPE)
    assert analysis.count_params(variables["params"]) == expected


def test_layers_follow_the_paper():
  model = models.create("alexnet")
  params = {r["layer"]: r for r in analysis.param_table(model, SHAPE)}
  assert list(params) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
  # Grouped layers see half the maps (one GPU's worth); conv3 sees all 256.
  assert params["conv2"]["shapes"]["kernel"] == (5, 5, 48, 256)
  assert params["conv3"]["shapes"]["kernel"] == (3, 3, 256, 384)
  assert params["conv4"]["shapes"]["kernel"] == (3, 3, 192, 384)
  acts = {r["layer"]: r["shape"] for r in analysis.activation_table(model, SHAPE)}
  assert acts["conv1"] == (55, 55, 96) and acts["conv5"] == (13, 13, 256)
  assert params["fc6"]["shapes"]["kernel"] == (6 * 6 * 256, 4096)
  assert flops.total_macs(model, SHAPE) == 724_406_816


def test_forward_on_a_small_input():
  model = models.create("alexnet", num_classes=7)
  rng = np.random.default_rng(0)
  x = rng.random((2, 67, 67, 3), np.float32)  # 67 -> 15 -> 7 -> 3 -> 1 spatially.
  # numpy fills the 21M weights in a fraction of a second; flax's jitted init takes many times longer.
  variables = jax.tree.map(lambda s: (0.02 * rng.standard_normal(s.shape)).astype(np.float32),
                           analysis.abstract_variables(model, x.shape))
  out = jax.jit(model.apply)(variables, x)
  assert out.shape == (2, 7) and np.isfinite(out).all()


def test_local_response_norm_matches_formula():
  x = np.random.default_rng(1).normal(size=(2, 3, 3, 7)).astype(np.float32)
  got = layers.lrn(x, size=5, k=2.0, alpha=1e-1, beta=0.75)
  want = np.empty_like(x)
  for c in range(7):
    lo, hi = max(0, c - 2), min(7, c + 3)
    want[..., c] = x[..., c] / (2.0 + 1e-1 * (x[..., lo:hi] ** 2).sum(-1)) ** 0.75
  np.testing.assert_allclose(got, want, rtol=1e-5)
