"""Training: a flax TrainState, pure jitted train/eval steps over a ("data",) mesh, and `fit`.

`fit` resumes from the latest checkpoint in its workdir, logs to metrics.jsonl + TensorBoard,
fetches metrics from the device only at log intervals, and stops on a NaN/inf loss without
overwriting the last good checkpoint.
"""

import functools
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh
from tqdm import tqdm

from cnnlab.ops import analysis
from cnnlab.report import rendering as reporting
from cnnlab.training import checkpoint, device_data, input_pipeline, losses, parallel, preemption
from cnnlab.data import Dataset
from cnnlab.errors import Preempted, TrainingDiverged, UserError
from cnnlab.runtime import prng
from cnnlab.training.metric_writer import MetricWriter


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
  return c


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Rejects impossible training settings up front, as one-line `UserError`s."""
  for name in ("steps", "batch_size", "eval_batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
    if not 1 <= config[name] <= 10**9:
      raise UserError(f"train.{name} must be a positive integer (at most 1e9), got {config[name]}")
  for name in ("learning_rate", "momentum", "weight_decay", "grad_clip"):
    if not math.isfinite(config[name]) or config[name] < 0:
      raise UserError(f"train.{name} must be a finite number >= 0, got {config[name]}")
  if config.learning_rate == 0:
    raise UserError("train.learning_rate must be > 0")
  losses.get(config.loss)
  if not 0 <= config.warmup_steps <= config.steps or config.eval_every < 0:
    raise UserError(f"train.warmup_steps must be in [0, steps] and train.eval_every >= 0, got "
                    f"{config.warmup_steps} and {config.eval_every}")


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


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array,
               loss: str = "cross_entropy") -> tuple[TrainState, dict]:
  """One optimisation step on a (sharded) batch; randomness is `fold_in(rng, step)` so resumes replay it."""
  step_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    logits, batch_stats = _forward(state, params, batch["x"], train=True, rng=step_rng)
    per_example = losses.get(loss)(logits, batch["y"])
    return per_example["loss"].mean(), (per_example, batch_stats)

  (_, (per_example, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  metrics = {k: v.mean() for k, v in per_example.items()}
  metrics["grad_norm"] = global_norm(grads)
  return state, metrics


def global_norm(tree) -> jax.Array:
  """The L2 norm of all leaves together, as `optax.tree.norm` up to float rounding.

  Leaves of 2^16 elements or more are squared and summed as one dot each: as a reduction, XLA:CPU
  materialised their squares (shared with Adam's second moment) and reduced them slowly. Two interleaved A/Bs
  of the steps: 784-1000-1000-10 MLP +3% and +11%, weight_sharing MLP +5% and -2%, the conv nets unchanged
  (dots for their small leaves too made them ~10% slower).
  """
  return jnp.sqrt(sum(jnp.vdot(g, g) if g.size >= 1 << 16 else jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree)))


def eval_step(state: TrainState, batch: dict[str, jax.Array], loss: str = "cross_entropy") -> dict[str, jax.Array]:
  """Masked sums of the loss's per-example values (e.g. loss, accuracy), and the example count."""
  logits, _ = _forward(state, state.params, batch["x"], train=False)
  m = batch["mask"]
  sums = {k: jnp.sum(v * m) for k, v in losses.get(loss)(logits, batch["y"]).items()}
  return {**sums, "count": jnp.sum(m)}


@functools.lru_cache(maxsize=None)
def compiled_steps(mesh: Mesh, loss: str = "cross_entropy"):
  """`train_step` and `eval_step` of `loss` jitted once per mesh with explicit shardings (state donated)."""
  rep, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  train = jax.jit(functools.partial(train_step, loss=loss), in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                  donate_argnums=0)
  evaluate_ = jax.jit(functools.partial(eval_step, loss=loss), in_shardings=(rep, data), out_shardings=rep)
  return train, evaluate_


@functools.lru_cache(maxsize=None)
def compiled_gather_step(mesh: Mesh, batch_size: int, loss: str = "cross_entropy"):
  """`train_step` on the batch gathered on the device from the resident training set (`device_data`)."""
  rep, data = parallel.replicated(mesh), parallel.data_sharding(mesh)

  def step(state, dataset, perm, rng):
    batch = jax.lax.with_sharding_constraint(device_data.gather(dataset, perm, state.step, batch_size), data)
    return train_step(state, batch, rng, loss)

  return jax.jit(step, in_shardings=(rep, rep, rep, rep), out_shardings=(rep, rep), donate_argnums=0)


def evaluate(state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int, mesh: Mesh,
             loss: str = "cross_entropy") -> dict[str, float]:
  """Mean of each per-example value of `loss` (loss, accuracy, ...) over every example of (x, y)."""
  parallel.check_batch_size(batch_size, mesh)
  _, eval_fn = compiled_steps(mesh, loss)
  totals = None
  rows = parallel.process_rows(batch_size)
  for batch in input_pipeline.eval_batches(x, y, batch_size, rows):
    out = eval_fn(state, parallel.shard_batch(batch, mesh))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  return {k: float(v / totals["count"]) for k, v in totals.items() if k != "count"}


def _check_finite(records: list[dict], first_step: int, ckpt: checkpoint.Checkpointer, workdir: str) -> None:
  for i, r in enumerate(records):
    bad = {k: float(r[k]) for k in ("loss", "grad_norm") if not math.isfinite(float(r[k]))}
    if bad:
      last = ckpt.latest_step()
      kept = f"the last good checkpoint (step {last}) is kept" if last is not None else "no checkpoint was written"
      raise TrainingDiverged(f"training diverged at step {first_step + i + 1} ({', '.join(f'{k}={v}' for k, v in bad.items())}); "
                             f"{kept} in {workdir}; lower train.learning_rate")


def _fetch(records: list[dict]) -> list[dict]:
  """Per-step metric dicts (device scalars, or floats from a resumed window) as host floats.

  Stacked on the device first: one transfer per metric instead of one per step and metric (fetching scalars
  one by one cost ~0.5 ms per step here, a sixth of a small MLP's step).
  """
  stacked = jax.device_get({k: jnp.stack([r[k] for r in records]) for k in records[0]})
  return [{k: float(v[i]) for k, v in stacked.items()} for i in range(len(records))]


def _load_pending(path: str, step: int) -> list[dict]:
  """Unlogged metrics saved at a preemption, if they belong to the checkpoint being resumed."""
  if not os.path.exists(path):
    return []
  saved = reporting.read_json(path)
  return saved["metrics"] if saved["step"] == step else []


def _step_inputs(config: ml_collections.ConfigDict, dataset: Dataset, seed: int, start: int, mesh: Mesh):
  """(jitted step, iterator of each step's inputs before the rng) from step `start` on.

  The training set on the device(s) with each batch gathered inside the step (`device_data`), or, for
  multi-process runs, sets over `device_data.MAX_BYTES` and `device_data=False`, host batches.
  """
  x, y = dataset.x_train, dataset.y_train
  if device_data.fits(x, y, config.device_data):
    data = device_data.put(x, y, mesh)
    perms = device_data.epoch_permutations(len(x), config.batch_size, seed, mesh, start)
    return compiled_gather_step(mesh, config.batch_size, config.loss), ((data, perm) for perm in perms)
  batches = parallel.device_batches(input_pipeline.train_batches(
      x, y, config.batch_size, seed, start, parallel.process_rows(config.batch_size)), mesh)
  return compiled_steps(mesh, config.loss)[0], ((batch,) for batch in batches)


def fit(config: ml_collections.ConfigDict, model: nn.Module, dataset: Dataset, workdir: str, seed: int,
        mesh: Mesh | None = None) -> tuple[TrainState, dict]:
  """Trains `model` on `dataset` for `config.steps`, resuming from `workdir`; returns (state, summary).

  A finished run (summary.json present) is restored from its final checkpoint, not re-trained.
  """
  validate_config(config)
  mesh = mesh or parallel.make_mesh()
  summary_path = os.path.join(workdir, "summary.json")
  parallel.check_batch_size(config.batch_size, mesh)
  os.makedirs(workdir, exist_ok=True)
  init_rng, step_rng = jax.random.split(jax.random.key(seed))
  state = create_train_state(model, make_optimizer(config), init_rng, dataset.example_shape, mesh)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  state = ckpt.restore_latest(state)
  start = int(state.step)
  if os.path.exists(summary_path) and start == config.steps:
    ckpt.close()
    return state, reporting.read_json(summary_path)
  writer = MetricWriter(workdir, resume_step=start, tensorboard=config.tensorboard)
  block = parallel.needs_blocking(mesh)
  step_fn, inputs = _step_inputs(config, dataset, seed, start, mesh)
  # Metrics of the unlogged part of a log window survive a preemption in this file, so a resumed run
  # logs exactly the averages an uninterrupted one would.
  pending_path = os.path.join(workdir, "pending_metrics.json")
  pending = _load_pending(pending_path, start)
  window_start = start - len(pending)
  bar = tqdm(total=config.steps, initial=start, disable=not config.progress, leave=False, desc=os.path.basename(workdir))
  try:
    with preemption.catch_termination() as stop:
      if stop.requested:  # signalled before this training started (e.g. while compiling)
        raise Preempted(start, stop.signum, workdir)
      for step in range(start, config.steps):
        state, metrics = step_fn(state, *next(inputs), step_rng)
        if block:
          jax.block_until_ready(metrics)
        pending.append(metrics)
        done = step + 1
        last = done == config.steps
        save = done % config.checkpoint_every == 0 or last
        if done % config.log_every == 0 or save or stop.requested:
          pending = _fetch(pending)
          _check_finite(pending, window_start, ckpt, workdir)
        if done % config.log_every == 0 or last:
          means = {f"train_{k}": float(np.mean([float(r[k]) for r in pending])) for k in pending[0]}
          writer.write(done, means)
          bar.set_postfix(loss=f"{means['train_loss']:.3f}")
          pending, window_start = [], done
        if config.eval_every and (done % config.eval_every == 0) and not last:
          test = evaluate(state, dataset.x_test, dataset.y_test, config.eval_batch_size, mesh, config.loss)
          writer.write(done, {f"test_{k}": v for k, v in test.items()})
        if save or stop.requested:
          reporting.write_json(pending_path, {"step": done, "metrics": [{k: float(v) for k, v in r.items()}
                                                                        for r in pending]})
          ckpt.save(done, state)
        bar.update(1)
        if stop.requested and not last:
          raise Preempted(done, stop.signum, workdir)
  finally:
    bar.close()
    ckpt.close()
    writer.close()
  train = evaluate(state, dataset.x_train, dataset.y_train, config.eval_batch_size, mesh, config.loss)
  test = evaluate(state, dataset.x_test, dataset.y_test, config.eval_batch_size, mesh, config.loss)
  writer = MetricWriter(workdir, resume_step=config.steps, tensorboard=config.tensorboard)
  writer.write(config.steps, {**{f"final_train_{k}": v for k, v in train.items()},
                              **{f"final_test_{k}": v for k, v in test.items()}})
  writer.close()
  if os.path.exists(pending_path):
    os.remove(pending_path)
  summary = {"steps": config.steps, **{f"train_{k}": v for k, v in train.items()},
             **{f"test_{k}": v for k, v in test.items()}, "params": analysis.count_params(state.params)}
  reporting.write_json(summary_path, summary)
  return state, summary
