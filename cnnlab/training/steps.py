"""The pure train and eval steps, jitted once per mesh with explicit shardings, and the program `fit` runs per step.

A `Program` is one batch interface whichever data path serves it: a compiled step and, for each step, its
inputs before the rng. `program` picks the training set on the device(s) with each batch gathered inside the
step (`device_data`), or host batches (`input_pipeline`) for multi-process runs and large sets; `host_program`
also takes a streamed set's batches (`cnnlab.data.streaming`). All give the same batches, so the same numbers.
"""

import functools
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from cnnlab import kernels
from cnnlab.data import augment as augment_lib
from cnnlab.training import device_data, input_pipeline, losses, parallel
from cnnlab.training.state import TrainState


def _forward(state: TrainState, params: Any, x: jax.Array, train: bool, rng: jax.Array | None = None):
  """Logits, plus the new batch statistics when training a model that has them."""
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  rngs = {"dropout": rng} if rng is not None else {}
  if train and state.batch_stats:
    logits, updates = state.apply_fn(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
    return logits, updates["batch_stats"]
  return state.apply_fn(variables, x, train=train, rngs=rngs), state.batch_stats


AUGMENT_STREAM = 1  # augmentation keys: fold_in(step key, AUGMENT_STREAM); dropout uses the step key itself
DTYPES = ("float32", "bfloat16")


class Recipe(NamedTuple):
  """A run's static choices for its train step (one compiled program per recipe); see `train.get_config`."""
  loss: str = "cross_entropy"
  kernels: str = "auto"
  augment: str = ""
  compute_dtype: str = "float32"


def recipe(config: ml_collections.ConfigDict) -> Recipe:
  return Recipe(config.loss, config.kernels, config.augment, config.compute_dtype)


@functools.lru_cache(maxsize=None)
def bound_step(r: Recipe) -> Callable[..., tuple[TrainState, dict]]:
  """`train_step` with the recipe's loss, grad-norm kernel, augmentation and compute dtype bound."""
  return functools.partial(train_step, loss=r.loss, grad_norm=kernels.tree_norm(r.kernels),
                           augment=augment_lib.build(r.augment) if r.augment else None, compute_dtype=r.compute_dtype)


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, loss: str = "cross_entropy",
               grad_norm: Callable[[Any], jax.Array] = optax.tree.norm, augment: Callable | None = None,
               compute_dtype: str = "float32") -> tuple[TrainState, dict]:
  """One optimisation step on a (sharded) batch; randomness is `fold_in(rng, step)` so resumes replay it.

  `augment(key, x)` transforms the batch first; `compute_dtype='bfloat16'` runs forward and backward in bfloat16
  on bfloat16 copies of the float32 params (gradients, params and optimizer state stay float32).
  """
  step_rng = jax.random.fold_in(rng, state.step)
  x = batch["x"] if augment is None else augment(jax.random.fold_in(step_rng, AUGMENT_STREAM), batch["x"])

  def loss_fn(params):
    if compute_dtype != "float32":
      params = jax.tree.map(lambda w: w.astype(compute_dtype), params)
    logits, batch_stats = _forward(state, params, x.astype(compute_dtype), train=True, rng=step_rng)
    logits = jax.tree.map(lambda a: a.astype(jnp.float32), logits)
    per_example = losses.get(loss)(logits, batch["y"])
    return per_example["loss"].mean(), (per_example, batch_stats)

  (_, (per_example, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  metrics = {k: v.mean() for k, v in per_example.items()}
  metrics["grad_norm"] = grad_norm(grads)
  return state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], loss: str = "cross_entropy") -> dict[str, jax.Array]:
  """Masked sums of the loss's per-example values (e.g. loss, accuracy), and the example count."""
  logits, _ = _forward(state, state.params, batch["x"], train=False)
  m = batch["mask"]
  sums = {k: jnp.sum(v * m) for k, v in losses.get(loss)(logits, batch["y"]).items()}
  return {**sums, "count": jnp.sum(m)}


@functools.lru_cache(maxsize=None)
def compiled_steps(mesh: Mesh, r: Recipe = Recipe()):
  """The recipe's train step and `eval_step` jitted once per mesh with explicit shardings (state donated)."""
  rep, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  train = jax.jit(bound_step(r), in_shardings=(rep, data, rep), out_shardings=(rep, rep), donate_argnums=0)
  evaluate_ = jax.jit(functools.partial(eval_step, loss=r.loss), in_shardings=(rep, data), out_shardings=rep)
  return train, evaluate_


@functools.lru_cache(maxsize=None)
def compiled_gather_step(mesh: Mesh, batch_size: int, r: Recipe = Recipe()):
  """The recipe's train step on the batch gathered on the device from the resident training set (`device_data`)."""
  rep, data = parallel.replicated(mesh), parallel.data_sharding(mesh)

  def step(state, dataset, perm, rng):
    batch = jax.lax.with_sharding_constraint(device_data.gather(dataset, perm, state.step, batch_size), data)
    return bound_step(r)(state, batch, rng)

  return jax.jit(step, in_shardings=(rep, rep, rep, rep), out_shardings=(rep, rep), donate_argnums=0)


def evaluate(state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int, mesh: Mesh,
             loss: str = "cross_entropy") -> dict[str, float]:
  """Mean of each per-example value of `loss` (loss, accuracy, ...) over every example of (x, y)."""
  return evaluate_batches(state, lambda rows: input_pipeline.eval_batches(x, y, batch_size, rows), batch_size, mesh,
                          loss)


def evaluate_batches(state: TrainState, batches: Callable[[slice], Iterator[dict[str, np.ndarray]]],
                     batch_size: int, mesh: Mesh, loss: str = "cross_entropy") -> dict[str, float]:
  """`evaluate` over `batches(rows)`: this process's rows of padded, masked batches of `batch_size` (e.g. a
  streamed split's `eval_batches`)."""
  parallel.check_batch_size(batch_size, mesh)
  _, eval_fn = compiled_steps(mesh, Recipe(loss=loss))
  totals = None
  for batch in batches(parallel.process_rows(batch_size)):
    out = eval_fn(state, parallel.shard_batch(batch, mesh))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  return {k: float(v / totals["count"]) for k, v in totals.items() if k != "count"}


class Program(NamedTuple):
  """What `fit` runs at each step: `state, metrics = step(state, *next(inputs), rng)`."""
  step: Callable[..., tuple[Any, dict]]
  inputs: Iterator[tuple]


def program(config: ml_collections.ConfigDict, x: np.ndarray, y: np.ndarray, seed: int, start: int,
            mesh: Mesh) -> Program:
  """The compiled train step on (x, y)'s shuffled batches of `config.batch_size`, from step `start` on.

  The training set on the device(s) with each batch gathered inside the step, or, for multi-process runs,
  sets over `device_data.MAX_BYTES` and `config.device_data=False`, host batches.
  """
  parallel.check_batch_size(config.batch_size, mesh)
  if device_data.fits(x, y, config.device_data):
    data = device_data.put(x, y, mesh)
    perms = device_data.epoch_permutations(len(x), config.batch_size, seed, mesh, start)
    step = compiled_gather_step(mesh, config.batch_size, recipe(config))
    return Program(step, ((data, perm) for perm in perms))
  return host_program(config, lambda rows: input_pipeline.train_batches(x, y, config.batch_size, seed, start, rows),
                      mesh)


def host_program(config: ml_collections.ConfigDict, batches: Callable[[slice], Iterator[dict[str, np.ndarray]]],
                 mesh: Mesh) -> Program:
  """The compiled train step on host batches: `batches(rows)` yields this process's rows of each global batch of
  `config.batch_size` (the in-memory pipeline's, or a streamed set's `train_batches`), sent to the device(s)
  ahead of the step by `parallel.device_batches`."""
  parallel.check_batch_size(config.batch_size, mesh)
  on_device = parallel.device_batches(batches(parallel.process_rows(config.batch_size)), mesh)
  return Program(compiled_steps(mesh, recipe(config))[0], ((batch,) for batch in on_device))
