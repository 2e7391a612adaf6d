"""Training configuration and `fit`, the one training loop every experiment uses.

`fit` resumes from the latest checkpoint in its workdir, logs to metrics.jsonl + TensorBoard, fetches metrics
from the device only when a log line, a hook or a checkpoint needs them, stops on a NaN/inf loss without
overwriting the last good checkpoint, and calls `hooks` between steps. What it trains is a `tasks.Task`: by
default a model on a `Dataset` (`tasks.SUPERVISED`); `dip.task` fits a Deep Image Prior generator.

`fit_seeds` trains several seeds of one supervised cell as one program over a state with a leading seed axis
(`seeds`), with the same loop; each seed's files land in its own workdir exactly as `fit` writes them, so either
reads, restores and resumes the other's runs.
"""

import math
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from cnnlab import kernels
from cnnlab.errors import UserError
from cnnlab.data import augment
from cnnlab.training import loop, losses, parallel, seeds as seeds_lib, steps, tasks
from cnnlab.training.state import create_seed_states, make_optimizer
from cnnlab.training.hooks import Hook

def get_config() -> ml_collections.ConfigDict:
  """Optimisation and loop fields shared by every experiment that trains."""
  c = ml_collections.ConfigDict()
  c.steps = 1000             # optimisation steps
  c.batch_size = 128         # global batch, split over all devices (must divide by the device count)
  c.eval_batch_size = 500    # evaluation batch (padded and masked at the end of a split)
  c.optimizer = "adam"       # 'adam' | 'adamw' | 'sgd' (with momentum)
  c.learning_rate = 1e-3     # peak learning rate
  c.schedule = "constant"    # 'constant' | 'cosine' (decays to 0 at `steps`)
  c.warmup_steps = 0         # linear warm-up from 0 to `learning_rate`
  c.momentum = 0.9           # sgd only
  c.weight_decay = 0.0       # adamw: decoupled decay; sgd/adam: added L2 gradient
  c.grad_clip = 0.0          # clip the global gradient norm to this; 0 disables
  c.log_every = 100          # steps between metric fetches (device -> host) and log lines
  c.eval_every = 0           # steps between test-set evaluations during training; 0: only at the end
  c.checkpoint_every = 500   # steps between checkpoints (a final one is always written)
  c.keep_checkpoints = 2     # checkpoints kept on disk
  c.tensorboard = True       # also write TensorBoard event files
  c.progress = True          # show a progress bar
  c.device_data = True       # keep the training set (<= 1 GiB, one process) on the device(s), gather batches there
  c.loss = "cross_entropy"   # cnnlab.training.losses: 'cross_entropy' (a label per example or pixel) | 'class_and_box'
  c.kernels = "auto"         # 'auto': cnnlab.kernels' CPU kernels on the CPU backend, plain XLA elsewhere | 'xla'
  c.augment = ""             # cnnlab.data.augment spec applied in the step, e.g. 'crop:4,flip', 'translate:2'; '' none
  c.compute_dtype = "float32"  # 'float32' | 'bfloat16': forward and backward dtype (params, optimizer stay float32)
  # Sweeps may train trials that differ only in seed (and data drawn with it) as one program with a leading seed
  # axis (`fit_seeds`): at most this many seeds per program (memory: S states and training sets); 1: one fit per
  # seed; 0: automatic, AUTO_SEED_GROUP on GPU/TPU and 1 on CPU, where 10 seeds as one program trained slower
  # than 10 fits for every small net measured (benchmarks/seeds.py). Numbers move only by float rounding.
  c.seed_group = 0
  c.seed_devices = 1         # devices along the mesh's "seed" axis in a seeded training (the rest split each batch)
  c.seed_batching = "vmap"   # how a seeded program steps its seeds: 'vmap' (S-times-wider ops) | 'map' (in turn)
  return c


AUTO_SEED_GROUP = 16  # seeds per program with `seed_group=0` on an accelerator (not yet measured on one here)


def seed_group(config: ml_collections.ConfigDict, backend: str | None = None) -> int:
  """Seeds a sweep trains as one program: `config.seed_group`, or for 0 the backend's automatic choice."""
  if config.seed_group:
    return config.seed_group
  return 1 if (backend or jax.default_backend()) == "cpu" else AUTO_SEED_GROUP


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Rejects impossible training settings up front, as one-line `UserError`s."""
  if not 0 <= config.seed_group <= 10**6:
    raise UserError(f"train.seed_group must be >= 0 (0: automatic), got {config.seed_group}")
  for name in ("steps", "batch_size", "eval_batch_size", "log_every", "checkpoint_every", "keep_checkpoints",
               "seed_devices"):
    if not 1 <= config[name] <= 10**9:
      raise UserError(f"train.{name} must be a positive integer (at most 1e9), got {config[name]}")
  for name in ("learning_rate", "momentum", "weight_decay", "grad_clip"):
    if not math.isfinite(config[name]) or config[name] < 0:
      raise UserError(f"train.{name} must be a finite number >= 0, got {config[name]}")
  if config.learning_rate == 0:
    raise UserError("train.learning_rate must be > 0")
  losses.get(config.loss)
  kernels.check(config.kernels)
  if config.augment:
    augment.build(config.augment)  # a one-line error for an unknown spec
  if config.compute_dtype not in steps.DTYPES:
    raise UserError(f"train.compute_dtype must be one of {steps.DTYPES}, got {config.compute_dtype!r}")
  if config.seed_batching not in seeds_lib.BATCHING:
    raise UserError(f"unknown train.seed_batching {config.seed_batching!r}; use one of {seeds_lib.BATCHING}")
  if not 0 <= config.warmup_steps <= config.steps or config.eval_every < 0:
    raise UserError(f"train.warmup_steps must be in [0, steps] and train.eval_every >= 0, got "
                    f"{config.warmup_steps} and {config.eval_every}")


def fit(config: ml_collections.ConfigDict, model: nn.Module, dataset: Any, workdir: str, seed: int,
        mesh: Mesh | None = None, *, task: tasks.Task = tasks.SUPERVISED,
        hooks: Sequence[Hook] = ()) -> tuple[Any, dict]:
  """Trains `model` on `dataset` (what `task` trains on) for `config.steps`, resuming from `workdir`.

  Returns (state, summary). A finished run (summary.json present) is restored from its final checkpoint, not
  re-trained, and its hooks are not called. A hook may end the run early; its summary then has
  `stopped_early` and the steps run.
  """
  validate_config(config)
  mesh = mesh or parallel.make_mesh()
  os.makedirs(workdir, exist_ok=True)
  loop.check_stamp(workdir, config)
  init_rng, step_rng = task.keys(seed)
  model = kernels.specialise(model, config.kernels)  # the one place a run chooses its kernels
  state = task.create_state(model, make_optimizer(config), init_rng, dataset, mesh)
  runs = loop.Runs([workdir], config.keep_checkpoints)
  score = lambda state, splits: [task.evaluate(state, dataset, config, mesh, splits)]
  try:
    state = runs.ckpts[0].restore_latest(state)
    summary = loop.finished_summary(workdir, int(state.step), config.steps)
    if summary is not None:
      return state, summary
    program = task.program(config, dataset, seed, int(state.step), mesh)
    state, stopped = loop.run_steps(config, runs, list(hooks), program, state, step_rng, score, mesh)
  finally:
    runs.close()
  return state, loop.finish(config, runs, state, score, stopped)[0]


def fit_seeds(config: ml_collections.ConfigDict, model: nn.Module, datasets: Sequence[Any], workdirs: Sequence[str],
              seeds: Sequence[int], mesh: Mesh | None = None) -> tuple[list[Any], list[dict]]:
  """`fit` of each (dataset, workdir, seed), trained together as one program over a state with a seed axis.

  Seed i draws exactly what `fit(config, model, datasets[i], workdirs[i], seeds[i])` draws (init, batch order,
  dropout keys) and writes the same files into workdirs[i]; its numbers equal that run's up to float rounding
  (the batched ops sum in another order). Supervised training without hooks only. Returns per-seed (unstacked)
  states and summaries. Seeds whose sets differ in shape, a multi-process run, finished and unfinished seeds
  mixed, or seed checkpoints with no step in common (left by differently grouped runs) fall back to one `fit`
  per seed, each resuming its own files.
  """
  validate_config(config)
  if not len(datasets) == len(workdirs) == len(seeds) or len(set(map(os.path.abspath, workdirs))) != len(workdirs):
    raise ValueError("fit_seeds needs one dataset, one distinct workdir and one seed per run")
  single = lambda: tuple(map(list, zip(*[fit(config, model, d, w, s) for d, w, s in
                                         zip(datasets, workdirs, seeds)])))
  if len(seeds) == 1 or not seeds_lib.stackable(datasets) or jax.process_count() > 1:
    return single()
  mesh = mesh or parallel.make_seed_mesh(len(seeds), config.seed_devices)
  for w in workdirs:
    os.makedirs(w, exist_ok=True)
    loop.check_stamp(w, config)
  keys = [tasks.SUPERVISED.keys(s) for s in seeds]
  step_rngs = jax.device_put(jnp.stack([k[1] for k in keys]), parallel.seed_sharding(mesh))
  model = kernels.specialise(model, config.kernels)
  state = create_seed_states(model, make_optimizer(config), jnp.stack([k[0] for k in keys]),
                             datasets[0].example_shape, mesh)
  runs = loop.Runs(workdirs, config.keep_checkpoints, seeds)
  score = lambda state, splits: seeds_lib.evaluate(state, datasets, config, mesh, splits)
  try:
    state = seeds_lib.restore(runs.ckpts, state, mesh)
    summaries = [] if state is None else [loop.finished_summary(w, runs.step(state), config.steps) for w in workdirs]
    if summaries and all(s is not None for s in summaries):
      return runs.unstack(state), summaries
    fall_back = state is None or any(s is not None for s in summaries)
    if not fall_back:
      program = seeds_lib.program(config, datasets, tuple(seeds), runs.step(state), mesh)
      state, _ = loop.run_steps(config, runs, [], program, state, step_rngs, score, mesh)
  finally:
    runs.close()
  if fall_back:
    return single()
  return runs.unstack(state), loop.finish(config, runs, state, score, False)


