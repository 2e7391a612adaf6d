"""`kernels.specialise`: on CPU every registered model with kernels equals its plain self; elsewhere it is plain."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import kernels, models
from cnnlab.errors import UserError

pytestmark = pytest.mark.usefixtures("classic_threefry")  # fast-compiling draws (conftest)

# Per registered model: small create() overrides and an input shape (batch first) that exercise every op field.
CASES = {
    "mlp": (dict(hidden=(8,)), (2, 6, 6, 1)),
    "cnn": (dict(features=(3, 4)), (2, 8, 8, 1)),
    "lcn": (dict(features=(3, 4)), (2, 8, 8, 1)),
    "lenet5": ({}, (2, 28, 28, 1)),
    "alexnet": (dict(num_classes=3), (2, 67, 67, 3)),
    "alexnet_ungrouped": (dict(num_classes=3), (2, 67, 67, 3)),
    "mnist1d_logistic": ({}, (2, 40, 1)),
    "mnist1d_mlp": ({}, (2, 40, 1)),
    "mnist1d_cnn": (dict(channels=4), (2, 40, 1)),
    "mnist1d_gru": ({}, (2, 40, 1)),
    "poolnet": (dict(features=(3,), downsample="maxblur"), (2, 8, 8, 1)),
    "deep_mlp": (dict(depth=2, width=8), (2, 6, 6, 1)),
    "deep_cnn": (dict(depth=2, width=4, norm="batch", residual=True), (2, 6, 6, 1)),
    "dip_skip": (dict(width=4, depth=1, skip_width=2), (1, 4, 4, 3)),
    "dip_pixels": ({}, (1, 8, 8, 3)),
    "dip_pixel_mlp": (dict(width=4, depth=2), (1, 8, 8, 3)),
    "segnet": (dict(features=(3, 4)), (2, 8, 8, 1)),
    "segnet_resize": (dict(features=(3, 4)), (2, 8, 8, 1)),
    "unet": (dict(features=(3, 4)), (2, 8, 8, 1)),
    "localiser": (dict(conv_features=(3, 4), hidden=(8,)), (2, 8, 8, 1)),
    "localiser_mlp": ({}, (2, 8, 8, 1)),
    # The CIFAR ResNets differ only in depth: narrowed and shortened, resnet44/56/110 are resnet20 (checked once).
    "resnet20": (dict(widths=(4, 8), stage_sizes=(1, 1)), (2, 6, 6, 3)),
    "resnet32": (dict(widths=(4, 8), stage_sizes=(1, 1)), (2, 8, 3)),
    "resnet44": (dict(widths=(4, 8), stage_sizes=(1, 1)), (2, 6, 6, 3)),
    "resnet56": (dict(widths=(4, 8), stage_sizes=(1, 1)), (2, 6, 6, 3)),
    "resnet110": (dict(widths=(4, 8), stage_sizes=(1, 1)), (2, 6, 6, 3)),
    "resnet18_cifar": (dict(widths=(4, 8), stage_sizes=(1, 1)), (2, 6, 6, 3)),
    "vgg11_cifar": (dict(features=(4, "M", 8, "M")), (2, 8, 8, 3)),
    "vgg16_cifar": (dict(features=(4, 4, "M")), (2, 6, 6, 3)),
}
VARIANTS = [  # the other pooling kinds
    ("poolnet", dict(features=(3,), downsample="l2"), (2, 8, 1)),
    ("poolnet", dict(features=(3,), downsample="avg", head="gap"), (2, 6, 6, 2)),
    ("cnn", dict(features=(3,), pool="avg", padding="VALID"), (2, 9, 2)),
]


def kernel_ops(value):
  """The cnnlab.kernels ops held by `value` (a module's fields, recursively; a partial's function and keywords)."""
  if isinstance(value, nn.Module):
    return [op for f in dataclasses.fields(value) if f.name not in ("parent", "name")
            for op in kernel_ops(getattr(value, f.name))]
  if isinstance(value, functools.partial):
    return kernel_ops(value.func) + [op for v in value.keywords.values() for op in kernel_ops(v)]
  return [value] if getattr(value, "__module__", "").startswith("cnnlab.kernels") else []


def test_every_registered_model_has_a_case():
  assert set(models.MODELS.names()) <= set(CASES), "add new models to CASES"


@pytest.mark.parametrize("name", sorted(CASES))
def test_other_backends_and_xla_keep_the_plain_model(name):
  model = models.create(name, **CASES[name][0])
  assert not kernel_ops(model)  # models are plain flax as created
  assert kernels.specialise(model, "auto", backend="gpu") is model
  assert kernels.specialise(model, "auto", backend="tpu") is model
  assert kernels.specialise(model, "xla", backend="cpu") is model
  fast = kernels.specialise(model, "auto", backend="cpu")
  assert kernels.specialise(fast, "auto", backend="cpu") == fast  # idempotent
  assert kernels.specialise(fast, "xla") is fast  # "xla" leaves any model as it is
  if jax.default_backend() != "cpu":
    assert kernels.specialise(model, "auto") is model


def _numpy_variables(abstract):
  """Variables drawn with numpy, weights scaled by 1/sqrt(fan-in) (AlexNet's fc6/fc7 are millions of weights: a
  jitted init would dominate the test)."""
  rng = np.random.default_rng(0)
  def draw(s):
    scale = 0.5 if len(s.shape) < 2 else 1 / np.sqrt(np.prod(s.shape[:-1]))
    return (scale * rng.standard_normal(s.shape)).astype(s.dtype)
  return jax.tree.map(draw, abstract)


def _outputs_and_grads(model, variables, x, ct):
  """Outputs, and the gradients of <outputs, ct> with respect to the parameters and the input (a train step)."""
  def loss(params, x):
    out = model.apply({**variables, "params": params}, x, train=True, rngs={"dropout": jax.random.key(2)},
                      mutable=["batch_stats"])[0]
    return jnp.vdot(out, ct), out
  (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(variables["params"], x)
  return out, grads


_CHECKED = set()


@pytest.mark.parametrize("name,kw,shape", [(n, *CASES[n]) for n in sorted(CASES)] + VARIANTS)
def test_cpu_kernels_equal_the_plain_model(name, kw, shape):
  model = models.create(name, **kw)
  fast = kernels.specialise(model, "auto", backend="cpu")
  if fast is model:
    assert not kernel_ops(fast)  # no op field with a kernel: nothing to compare
    return
  assert kernel_ops(fast)
  if (repr(model), shape) in _CHECKED:  # another name for a model already checked
    return
  _CHECKED.add((repr(model), shape))
  x = jax.random.normal(jax.random.key(1), shape)
  abstract = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.eval_shape(fast.init, jax.random.key(0), x) == abstract  # same variables: names, shapes, dtypes
  variables = _numpy_variables(abstract)
  ct = jax.random.normal(jax.random.key(3), jax.eval_shape(model.apply, variables, x).shape)
  out, grads = _outputs_and_grads(model, variables, x, ct)
  out_fast, grads_fast = _outputs_and_grads(fast, variables, x, ct)
  # Float tolerance relative to the largest value of the tree (e.g. BatchNorm makes a bias gradient ~0 + rounding).
  for fast_tree, tree in ((out_fast, out), (grads_fast, grads)):
    atol = 1e-5 * max(1.0, max(float(np.abs(v).max()) for v in jax.tree.leaves(tree)))
    for a, b in zip(jax.tree.leaves(fast_tree), jax.tree.leaves(tree)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)


def test_unknown_choice_is_a_user_error():
  with pytest.raises(UserError, match="unknown kernels 'fast'"):
    kernels.specialise(models.create("cnn"), "fast")


def test_tree_norm_follows_the_choice():
  assert kernels.tree_norm("auto", backend="cpu") is kernels.norms.global_norm
  assert kernels.tree_norm("auto", backend="gpu") is kernels.tree_norm("xla", backend="cpu")
