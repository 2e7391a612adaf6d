"""The train state (params, optimizer state, step, BatchNorm statistics), the optimizer, and their initialisation."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state
from jax.sharding import Mesh

from cnnlab.errors import UserError
from cnnlab.runtime import prng
from cnnlab.training import parallel


class TrainState(train_state.TrainState):
  """Params, optimizer state and step; `batch_stats` for models with BatchNorm (else an empty dict)."""
  batch_stats: Any = None


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optax optimizer of `config`; equal configs return the same object, so jitted steps are reused."""
  return _optimizer(config.optimizer, config.learning_rate, config.schedule, config.steps, config.warmup_steps,
                    config.momentum, config.weight_decay, config.grad_clip)


@functools.lru_cache(maxsize=64)
def _optimizer(name, learning_rate, schedule, steps, warmup_steps, momentum, weight_decay, grad_clip):
  # The optimizer is a static field of TrainState: a new object per run would recompile every step function.
  if schedule == "constant":
    lr = optax.constant_schedule(learning_rate)
  elif schedule == "cosine":
    lr = optax.cosine_decay_schedule(learning_rate, max(1, steps - warmup_steps))
  else:
    raise UserError(f"unknown schedule {schedule!r}; use 'constant' or 'cosine'")
  if warmup_steps:
    lr = optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps), lr], [warmup_steps])
  chain = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  if name == "adamw":
    chain.append(optax.adamw(lr, weight_decay=weight_decay))
  elif name in ("adam", "sgd"):
    if weight_decay:
      chain.append(optax.add_decayed_weights(weight_decay))
    chain.append(optax.adam(lr) if name == "adam" else optax.sgd(lr, momentum=momentum))
  else:
    raise UserError(f"unknown optimizer {name!r}; use 'adam', 'adamw' or 'sgd'")
  return optax.chain(*chain)


@functools.lru_cache(maxsize=64)
def _jitted_init(model: nn.Module, tx: optax.GradientTransformation, example_shape: tuple[int, ...], mesh: Mesh):
  """State initialisation compiled once per (model, optimizer, input shape, mesh), output already replicated."""

  def init(rng):
    variables = model.init({"params": rng, "dropout": rng}, jnp.zeros((1, *example_shape), jnp.float32), train=False)
    # `model` is this first-seen instance for all equal models: they then share one `apply_fn` (bound
    # methods compare by instance), so the TrainState tree structure, and every compiled step, is reused.
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}))

  abstract = jax.eval_shape(init, jax.random.key(0))
  return jax.jit(init, out_shardings=jax.tree.map(lambda _: parallel.replicated(mesh), abstract))


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       example_shape: tuple[int, ...], mesh: Mesh) -> TrainState:
  """Initialises params and optimizer state directly in their replicated sharding (no host copy)."""
  with prng.classic_threefry():
    return _jitted_init(model, tx, tuple(example_shape), mesh)(rng)


@functools.lru_cache(maxsize=64)
def _jitted_seed_init(model: nn.Module, tx: optax.GradientTransformation, example_shape: tuple[int, ...], mesh: Mesh,
                      seeds: int):
  """`_jitted_init`'s init vmapped over `seeds` keys: every leaf gets a leading seed axis, split over "seed"."""

  def init(rng):
    variables = model.init({"params": rng, "dropout": rng}, jnp.zeros((1, *example_shape), jnp.float32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}))

  sharding = parallel.seed_sharding(mesh)
  rngs = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), seeds))
  abstract = jax.eval_shape(jax.vmap(init), rngs)
  return jax.jit(jax.vmap(init), in_shardings=sharding, out_shardings=jax.tree.map(lambda _: sharding, abstract))


def create_seed_states(model: nn.Module, tx: optax.GradientTransformation, rngs: jax.Array,
                       example_shape: tuple[int, ...], mesh: Mesh) -> TrainState:
  """One state per init key of `rngs` (S,), stacked: seed i's leaves are `create_train_state(..., rngs[i], ...)`'s."""
  with prng.classic_threefry():
    return _jitted_seed_init(model, tx, tuple(example_shape), mesh, len(rngs))(rngs)
