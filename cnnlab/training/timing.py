"""Wall time of a compiled train step, for tables that compare models by speed as well as accuracy."""

import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from cnnlab import kernels
from cnnlab.training import parallel, state as state_lib, tasks


def median_step_seconds(config: ml_collections.ConfigDict, model: nn.Module, dataset: Any, steps: int = 10,
                        seed: int = 0, task: tasks.Task = tasks.SUPERVISED) -> float:
  """Median seconds of `steps` train steps of the program `train.fit` runs, after a first step that compiles.

  The same jitted init, step and data path as `fit` (already compiled if the model was trained), fed as fit
  feeds it. Timings depend on the machine and its load: compare them within one run.
  """
  mesh = parallel.make_mesh()
  init_rng, step_rng = task.keys(seed)
  model = kernels.specialise(model, config.kernels)  # as fit does
  state = task.create_state(model, state_lib.make_optimizer(config), init_rng, dataset, mesh)
  program = task.program(config, dataset, seed, 0, mesh)
  state, metrics = program.step(state, *next(program.inputs), step_rng)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = program.step(state, *next(program.inputs), step_rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return float(np.median(times))
