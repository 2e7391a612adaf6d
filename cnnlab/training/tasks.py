"""What `fit` trains: how a task draws its keys, builds its state, feeds its step and scores the result.

The default, `SUPERVISED`, fits a `Dataset` (or a `streaming.StreamedDataset`, read from its files as it trains)
by `config.loss` (classification, per-pixel labels, class + box);
`dip.task` fits a generator to one image. Each piece is a plain function, so a task is data, not a subclass.
"""

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import ml_collections
import optax
from jax.sharding import Mesh

from cnnlab.data import streaming
from cnnlab.training import input_pipeline, state as state_lib, steps

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class Task:
  """The four task-specific parts of `fit`; everything else (resume, logging, NaN stop, hooks) is shared."""
  # seed -> (init rng, step rng); the step rng is folded with the step, so a resumed run replays it.
  keys: Callable[[int], tuple[jax.Array, jax.Array]]
  # (model, optimizer, init rng, data, mesh) -> the state at step 0.
  create_state: Callable[[nn.Module, optax.GradientTransformation, jax.Array, Any, Mesh], Any]
  # (config, data, seed, start step, mesh) -> the compiled step and each step's inputs from `start` on.
  program: Callable[[ml_collections.ConfigDict, Any, int, int, Mesh], steps.Program]
  # (state, data, config, mesh, splits) -> {split: {metric: value}}, logged as final_<split>_<metric> and summarised.
  evaluate: Callable[[Any, Any, ml_collections.ConfigDict, Mesh, Sequence[str]], dict[str, dict[str, float]]]


def _keys(seed: int) -> tuple[jax.Array, jax.Array]:
  init_rng, step_rng = jax.random.split(jax.random.key(seed))
  return init_rng, step_rng


def _create_state(model, tx, rng, dataset, mesh) -> state_lib.TrainState:
  return state_lib.create_train_state(model, tx, rng, dataset.example_shape, mesh)


def _program(config, dataset, seed, start, mesh) -> steps.Program:
  if isinstance(dataset, streaming.StreamedDataset):
    return steps.host_program(config, lambda rows: dataset.train_batches(config.batch_size, seed, start, rows), mesh)
  return steps.program(config, dataset.x_train, dataset.y_train, seed, start, mesh)


def _eval_batches(dataset, split: str, batch_size: int):
  """rows -> this process's rows of `split`'s padded, masked evaluation batches."""
  if isinstance(dataset, streaming.StreamedDataset):
    return lambda rows: dataset.eval_batches(split, batch_size, rows)
  x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
  return lambda rows: input_pipeline.eval_batches(x, y, batch_size, rows)


def _evaluate(state, dataset, config, mesh, splits=SPLITS) -> dict[str, dict[str, float]]:
  return {s: steps.evaluate_batches(state, _eval_batches(dataset, s, config.eval_batch_size), config.eval_batch_size,
                                    mesh, config.loss) for s in splits}


SUPERVISED = Task(keys=_keys, create_state=_create_state, program=_program, evaluate=_evaluate)
