"""CIFAR ResNets and VGGs: parameter counts against the literature, output shapes, BatchNorm train/eval."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import models
from cnnlab.errors import UserError

# Exact counts of these implementations (params only, BatchNorm scale + bias included, running statistics not),
# next to the figure the literature gives, in millions:
#   resnet20..110: He et al. 2016, Table 6 (0.27M, 0.46M, 0.66M, 0.85M, 1.7M), option A shortcuts.
#   resnet18_cifar: 11.17M, kuangliu/pytorch-cifar ResNet18 (the same architecture in PyTorch: 11,173,962).
#   vgg11_cifar / vgg16_cifar: kuangliu/pytorch-cifar VGG('VGG11') / VGG('VGG16'): the conv layers of
#   Simonyan & Zisserman's configurations A / D (9,220,480 / 14,714,688 weights and biases, as in torchvision's
#   vgg11 / vgg16 `features`), plus BatchNorm (5,504 / 8,448) and a 512 -> 10 dense layer (5,130).
PARAM_COUNTS = {
    "resnet20": (269_722, "0.27"),
    "resnet32": (464_154, "0.46"),
    "resnet44": (658_586, "0.66"),
    "resnet56": (853_018, "0.85"),
    "resnet110": (1_727_962, "1.7"),
    "resnet18_cifar": (11_173_962, "11.17"),
    "vgg11_cifar": (9_231_114, "9.23"),
    "vgg16_cifar": (14_728_266, "14.7"),
}


def _abstract(model, shape=(2, 32, 32, 3)):
  """(variables, logits) as shapes, without computing anything."""
  def init_apply():
    variables = model.init(jax.random.key(0), jnp.zeros(shape), train=False)
    return variables, model.apply(variables, jnp.zeros(shape))
  return jax.eval_shape(init_apply)


def _numpy_init(model, x):
  """Variables of `model` drawn with numpy (compiling `model.init` costs more than the test): BatchNorm means 0,
  variances 1 as flax initialises them."""
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  fill = lambda path, a: (np.ones if path[-1].key == "var" else np.zeros)(a.shape, np.float32)
  return {"params": jax.tree.map(lambda a: 0.3 * rng.standard_normal(a.shape, np.float32), shapes["params"]),
          "batch_stats": jax.tree_util.tree_map_with_path(fill, shapes["batch_stats"])}


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_counts_match_the_literature_and_logits_shape(name):
  exact, literature = PARAM_COUNTS[name]
  variables, logits = _abstract(models.create(name), (3, 32, 32, 3))
  assert _count(variables["params"]) == exact
  # The literature rounds to its last stated digit (millions).
  assert f"{exact / 1e6:.{len(literature.split('.')[1])}f}" == literature
  assert variables["batch_stats"]  # BatchNorm everywhere
  assert logits.shape == (3, 10)


@pytest.mark.parametrize("name", ["resnet20", "vgg11_cifar"])
def test_num_classes_sets_the_head(name):
  assert _abstract(models.create(name, num_classes=7))[1].shape == (2, 7)


def test_option_a_shortcuts_have_no_parameters_and_option_b_projects():
  """Option B adds a 1x1 conv + BatchNorm at each of ResNet-20's two stage changes: (16*32 + 2*32) + (32*64 + 2*64)."""
  a = _count(_abstract(models.create("resnet20"))[0]["params"])
  b = _count(_abstract(models.create("resnet20", shortcut="B"))[0]["params"])
  assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_stage_sizes_halve_the_input():
  """ResNet-20 on 32x32: 32 -> 16 -> 8 positions over its three stages, 64 channels at the end."""
  model = models.create("resnet20")
  x = jnp.zeros((1, 32, 32, 3))
  _, state = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x), x,
                                                capture_intermediates=True, mutable=["intermediates"]))
  shapes = {k: v["__call__"][0].shape for k, v in state["intermediates"].items() if k.startswith("stage")}
  assert shapes["stage1_block3"] == (1, 32, 32, 16)
  assert shapes["stage2_block1"] == (1, 16, 16, 32)
  assert shapes["stage3_block3"] == (1, 8, 8, 64)


@pytest.mark.parametrize("name,kwargs,shape", [
    # Fewer blocks or narrower than the registered nets (whose sizes the count test checks) to compile fast.
    ("resnet20", {"stage_sizes": (1, 1, 1)}, (4, 8, 8, 3)),
    ("resnet18_cifar", {"stage_sizes": (1, 1, 1, 1), "widths": (4, 8, 8, 8)}, (4, 8, 8, 3)),  # option B
    ("resnet20", {"stage_sizes": (1, 1, 1)}, (4, 16, 2)),  # signals (B, L, C)
    ("vgg11_cifar", {"features": (4, "M", 8, "M", 8, 8, "M")}, (4, 8, 8, 3)),
])
def test_train_mode_updates_batch_stats_and_eval_mode_does_not(name, kwargs, shape):
  model = models.create(name, **kwargs)
  x = jnp.asarray(np.random.default_rng(1).normal(size=shape).astype(np.float32))
  variables = _numpy_init(model, x)

  @jax.jit  # one compile instead of eager op-by-op dispatch
  def run(variables, x):
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    # Eval mode with batch_stats immutable: flax would raise if BatchNorm tried to write them.
    return logits, updates["batch_stats"], model.apply(variables, x, train=False), model.apply(variables, x[:1])

  logits, new_stats, eval_logits, first_logits = run(variables, x)
  assert logits.shape == eval_logits.shape == (shape[0], 10)
  changed = jax.tree.map(lambda old, new: not np.allclose(old, new), variables["batch_stats"], new_stats)
  assert all(jax.tree.leaves(changed))
  assert not np.allclose(logits, eval_logits)  # train mode normalises with the batch's statistics
  # In eval mode examples are independent: the first one's logits do not depend on the rest of the batch.
  np.testing.assert_allclose(first_logits, eval_logits[:1], rtol=1e-5, atol=1e-5)


def test_bad_configurations_are_user_errors():
  x = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(UserError, match="shortcut"):
    jax.eval_shape(lambda: models.create("resnet20", shortcut="C").init(jax.random.key(0), x))
  with pytest.raises(UserError, match="max-pool"):
    jax.eval_shape(lambda: models.create("vgg16_cifar").init(jax.random.key(0), jnp.zeros((1, 16, 16, 3))))
