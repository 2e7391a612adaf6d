"""Parameter, activation (neuron) and FLOP accounting for any linen model."""

from typing import Any

import flax
import flax.linen as nn
import jax
import numpy as np


def count_params(params: Any) -> int:
  """Total number of scalars in a parameter pytree."""
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def abstract_variables(model: nn.Module, x_shape: tuple[int, ...]) -> Any:
  """The model's variables as shapes only (no FLOPs, no memory)."""
  x = jax.ShapeDtypeStruct(x_shape, np.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def call_order(model: nn.Module, x_shape: tuple[int, ...]) -> list[str]:
  """Names of the model's top-level submodules in the order its forward pass calls them."""
  order: list[str] = []

  def record(next_fun, args, kwargs, context):
    path = context.module.path
    if context.method_name == "__call__" and len(path) == 1 and path[0] not in order:
      order.append(path[0])
    return next_fun(*args, **kwargs)

  def run(x):
    with nn.intercept_methods(record):
      return model.init(jax.random.key(0), x, train=False)

  jax.eval_shape(run, jax.ShapeDtypeStruct(x_shape, np.float32))
  return order


def _ordered(names, order: list[str]) -> list[str]:
  rank = {n: i for i, n in enumerate(order)}
  return sorted(names, key=lambda n: rank.get(n, len(rank)))


def param_table(model: nn.Module, x_shape: tuple[int, ...]) -> list[dict]:
  """One row per top-level layer: name, parameter shapes and count (in call order)."""
  params = abstract_variables(model, x_shape)["params"]
  rows = []
  for name in _ordered(params, call_order(model, x_shape)):
    sub = params[name]
    shapes = {"/".join(k): tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(
        sub if isinstance(sub, dict) else {"": sub}).items()}
    rows.append({"layer": name, "shapes": shapes, "params": count_params(sub)})
  return rows


def activation_table(model: nn.Module, x_shape: tuple[int, ...]) -> list[dict]:
  """Output shape and neuron count (activations per example) of each top-level layer, in call order."""
  x = jax.ShapeDtypeStruct(x_shape, np.float32)

  def run(variables, x):
    return model.apply(variables, x, train=False, capture_intermediates=True, mutable=["intermediates"])

  _, state = jax.eval_shape(run, abstract_variables(model, x_shape), x)
  inter = {k: v for k, v in state["intermediates"].items() if k != "__call__"}
  rows = []
  for name in _ordered(inter, call_order(model, x_shape)):
    out = inter[name]["__call__"][0]
    rows.append({"layer": name, "shape": tuple(out.shape[1:]), "neurons": int(np.prod(out.shape[1:]))})
  return rows
