"""Wall time of a compiled train step, for tables that compare models by speed as well as accuracy."""

import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from cnnlab.training import input_pipeline, parallel, train
from cnnlab.data import Dataset


def median_step_seconds(config: ml_collections.ConfigDict, model: nn.Module, dataset: Dataset, steps: int = 10,
                        seed: int = 0) -> float:
  """Median seconds of `steps` train steps on one batch of `dataset`, after a first step that compiles.

  Uses the same jitted init and step as `train.fit` (already compiled if the model was trained). Timings
  depend on the machine and its load: compare them within one run.
  """
  mesh = parallel.make_mesh()
  state = train.create_train_state(model, train.make_optimizer(config), jax.random.key(seed), dataset.example_shape,
                                   mesh)
  train_fn, _ = train.compiled_steps(mesh, config.loss)
  batch = next(input_pipeline.train_batches(dataset.x_train, dataset.y_train, config.batch_size, seed,
                                            rows=parallel.process_rows(config.batch_size)))
  batch = parallel.shard_batch(batch, mesh)
  rng = jax.random.key(seed)
  state, metrics = train_fn(state, batch, rng)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = train_fn(state, batch, rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return float(np.median(times))
