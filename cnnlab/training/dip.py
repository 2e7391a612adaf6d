"""Deep Image Prior as a `fit` task: a generator maps a fixed random code to one image; the clean image is tracked.

The one "example" is a `Problem`: the code z, the corrupted target, the clean image (only scored) and a mask
of the known pixels. `task` gives `train.fit` the state (with the output average and the best output), the
pure step (masked MSE, fresh input noise per step, PSNR to the clean image) and no final evaluation; the
per-step curves are the run's metrics.jsonl (`train_config` logs every step), so a finished fit restored from
its checkpoint still has them. Around it: `trial` / `run_fits` (fits as `sweep` trials, each summarised by
`summarise`: PSNR at the peak, the last step and a stop read from the loss alone), `seeded_photos`,
`fitting_targets` (the paper's Fig. 2) and `CurveLog` (metrics.jsonl and a progress line per fit).

The step is dispatched one step at a time from the host rather than chunked with `lax.scan`: on XLA:CPU a
convolution inside a loop body runs several times slower than the same step outside one (jax-ml/jax#12868),
which dwarfs the dispatch cost; full unrolling restores the speed but takes minutes to compile.
"""

import dataclasses
import functools
import itertools
import json
import re
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from cnnlab.data import images
from cnnlab.metrics import image as image_metrics
from cnnlab.runtime import prng
from cnnlab.training import hooks, steps, sweep, tasks, train
from cnnlab.training.metric_writer import read_metrics

CURVES = ("loss", "psnr", "psnr_ema", "grad_norm")  # per-step metrics of `dip_step`


class DipState(train_state.TrainState):
  """Params and Adam state, plus the running output average and the best output seen (for figures)."""
  ema: jax.Array          # exponential moving average of the outputs (the paper's smoothing variant)
  best_out: jax.Array     # output at the highest PSNR to the clean image so far: oracle, never optimised on
  best_psnr: jax.Array
  # Leaves, not static fields, so that every fit of one model and image size shares one compiled step.
  reg_noise_std: jax.Array
  ema_decay: jax.Array


@dataclasses.dataclass(frozen=True)
class Problem:
  """What a DIP fit trains on: the code z (1, H, W, C_z), target and clean (H, W, C), mask (H, W, 1) of known pixels."""
  z: jax.Array
  target: np.ndarray
  clean: np.ndarray
  mask: np.ndarray


def keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(init, code, input-noise) keys of a fit with `seed`."""
  with prng.classic_threefry():  # fast to compile, and 4x faster noise than rbg keys on XLA:CPU
    init_rng, code_rng, noise_rng = jax.random.split(jax.random.key(seed), 3)
  return init_rng, code_rng, noise_rng


def input_code(rng: jax.Array, size: int, channels: int, scale: float = 0.1) -> jax.Array:
  """The fixed network input z: U(0, scale) noise of shape (1, size, size, channels), as in the paper."""
  with prng.classic_threefry():
    return scale * jax.random.uniform(rng, (1, size, size, channels))


def problem(target: np.ndarray, clean: np.ndarray, seed: int, code_channels: int,
            mask: np.ndarray | None = None) -> Problem:
  """The fit of (H, W, C) `target`, scored against `clean`, with the code z of `seed` (all pixels known by default)."""
  mask = np.ones(target.shape[:2] + (1,), np.float32) if mask is None else mask
  return Problem(input_code(keys(seed)[1], target.shape[0], code_channels), target, clean, mask)


def masked_mse(out: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """MSE over the observed entries only (`mask` is 1 where a pixel is known, broadcast over channels)."""
  mask = jnp.broadcast_to(mask, out.shape)
  return jnp.sum(mask * jnp.square(out - target)) / jnp.maximum(jnp.sum(mask), 1.0)


@functools.lru_cache(maxsize=None)
def _init_fn(model: nn.Module, tx: optax.GradientTransformation) -> Callable[..., DipState]:
  """One jitted state constructor per (model, optimizer), so that equal models share one compiled step."""
  # Equal models then share apply_fn and tx (static fields of the state); jitted, init is not dispatched op by op.

  @jax.jit
  def init(rng, z, reg_noise_std, ema_decay):
    params = model.init(rng, z)["params"]
    out = jax.eval_shape(lambda p: model.apply({"params": p}, z), params)
    # Separate buffers: `dip_step` donates the state, and one buffer cannot be donated twice.
    return DipState.create(apply_fn=model.apply, params=params, tx=tx, ema=jnp.zeros(out.shape, out.dtype),
                           best_out=jnp.zeros(out.shape, out.dtype), best_psnr=jnp.full((), -jnp.inf, jnp.float32),
                           reg_noise_std=reg_noise_std, ema_decay=ema_decay)
  return init


def create_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, z: jax.Array,
                 reg_noise_std: float = 0.0, ema_decay: float = 0.99) -> DipState:
  """Initialises the model on `z` and `tx`, with the output buffers shaped like the model's output."""
  with prng.classic_threefry():
    return _init_fn(model, tx)(rng, z, jnp.float32(reg_noise_std), jnp.float32(ema_decay))


@functools.partial(jax.jit, donate_argnums=0)
def dip_step(state: DipState, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[DipState, dict]:
  """One optimizer step on the masked MSE to `batch['target']`; metrics include PSNR to `batch['clean']`."""
  # The paper perturbs the code afresh at every step; fold_in(rng, step) makes a resumed fit replay it.
  # Fits without input noise (std 0) skip the draw: it was half of a small ablation net's step on CPU.
  z = jax.lax.cond(state.reg_noise_std > 0, lambda z: z + state.reg_noise_std * jax.random.normal(
      jax.random.fold_in(rng, state.step), z.shape), lambda z: z, batch["z"])

  def loss_fn(params):
    out = state.apply_fn({"params": params}, z)
    return masked_mse(out, batch["target"], batch["mask"]), out

  (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  ema = jnp.where(state.step == 0, out, state.ema_decay * state.ema + (1 - state.ema_decay) * out)
  psnr = image_metrics.psnr(out, batch["clean"])
  better = psnr > state.best_psnr
  metrics = {"loss": loss, "psnr": psnr, "psnr_ema": image_metrics.psnr(ema, batch["clean"]),
             "grad_norm": optax.tree.norm(grads)}
  state = state.apply_gradients(grads=grads).replace(
      ema=ema, best_out=jnp.where(better, out, state.best_out), best_psnr=jnp.maximum(psnr, state.best_psnr))
  return state, metrics


def _step(state: DipState, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[DipState, dict]:
  with prng.classic_threefry():  # the input noise is drawn with the classic Threefry, like the code and the init
    return dip_step(state, batch, rng)


def device_batch(p: Problem) -> dict[str, jax.Array]:
  """The batch `dip_step` takes every step."""
  return {"z": p.z, "target": jnp.asarray(p.target)[None], "clean": jnp.asarray(p.clean)[None],
          "mask": jnp.asarray(p.mask)[None]}


def _keys(seed: int) -> tuple[jax.Array, jax.Array]:
  init_rng, _, noise_rng = keys(seed)
  return init_rng, noise_rng


def _create_state(model, tx, rng, p: Problem, mesh, reg_noise_std: float, ema_decay: float) -> DipState:
  del mesh  # one image on one device
  return create_state(model, tx, rng, p.z, reg_noise_std, ema_decay)


def _program(config, p: Problem, seed, start, mesh) -> steps.Program:
  del config, seed, start, mesh  # the same single example every step
  return steps.Program(_step, itertools.repeat((device_batch(p),)))


def _no_evaluation(state, p, config, mesh, splits) -> dict:
  del state, p, config, mesh, splits  # the curves say it all
  return {}


def task(reg_noise_std: float = 0.0, ema_decay: float = 0.99) -> tasks.Task:
  """The `fit` task of a DIP generator on a `Problem`, with input-noise std and output-averaging decay."""
  return tasks.Task(keys=_keys, program=_program, evaluate=_no_evaluation, create_state=functools.partial(
      _create_state, reg_noise_std=reg_noise_std, ema_decay=ema_decay))


def train_config(steps: int, learning_rate: float) -> ml_collections.ConfigDict:
  """Adam at a constant rate for `steps` on the one example, logging every step (the curves), one checkpoint."""
  c = train.get_config()
  c.update(dict(steps=steps, learning_rate=learning_rate, batch_size=1, eval_batch_size=1, log_every=1,
                checkpoint_every=steps, tensorboard=False, progress=False))
  return c


def stop_at(threshold: float, every: int) -> hooks.Hook:
  """Ends a fit at the end of the first `every` steps in which the loss reached `threshold`."""
  return hooks.stop_at("loss", threshold, every)


def curves(workdir: str) -> dict[str, np.ndarray]:
  """Per-step float32 curves (loss, psnr, psnr_ema, grad_norm) of the fit in `workdir`, from its metrics.jsonl."""
  rows = [r for r in read_metrics(workdir) if "train_loss" in r]
  return {k: np.asarray([r[f"train_{k}"] for r in rows], np.float32) for k in CURVES}


def steps_to_reach(loss_curve: np.ndarray, threshold: float) -> int | None:
  """First step (1-based count of steps taken) whose loss is <= `threshold`; None if never reached."""
  hit = np.nonzero(np.asarray(loss_curve) <= threshold)[0]
  return int(hit[0]) + 1 if hit.size else None


def summarise(c: dict[str, np.ndarray], stop_loss: float | None = None) -> dict:
  """PSNRs of a fit's curves: at its peak (an oracle step: it looks at the clean image), at the last step run, of
  the output average, and at the stop: the first step whose loss is <= `stop_loss` (the last step run if none is,
  or if `stop_loss` is None). `stop_step` is None when the loss never got there."""
  reached = steps_to_reach(c["loss"], stop_loss) if stop_loss is not None else None
  stop = (reached or len(c["loss"])) - 1
  return {"peak_psnr": float(c["psnr"].max()), "peak_step": int(c["psnr"].argmax()) + 1, "steps_run": len(c["loss"]),
          "final_psnr": float(c["psnr"][-1]), "ema_final_psnr": float(c["psnr_ema"][-1]),
          "final_loss": float(c["loss"][-1]), "stop_step": reached, "stop_psnr": float(c["psnr"][stop]),
          "stop_ema_psnr": float(c["psnr_ema"][stop])}


def laps() -> Callable[[], float]:
  """A clock: each call returns the seconds since the previous one (the first: since this was made)."""
  last = [time.time()]

  def lap() -> float:
    now = time.time()
    seconds, last[0] = now - last[0], now
    return seconds
  return lap


def trial(workdir: str, name: str, net: nn.Module, p: Problem, seed: int, num_steps: int, learning_rate: float,
          tags: dict, *, reg_noise_std: float, ema_decay: float, stop_loss: float | None = None, every: int = 10,
          lap: Callable[[], float] | None = None) -> sweep.Trial:
  """A `sweep.Trial` of one fit of `net` to `p`, ending within `every` steps of reaching `stop_loss` (if given).

  Its record gains the per-step curves, the seconds since the previous trial's (`lap`: each trial's fit, restore
  included), and the final output average and the best (oracle) output.
  """
  t = sweep.Trial(re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"), net, p, seed,
                  train_config(num_steps, learning_rate), tags, task=task(reg_noise_std, ema_decay),
                  hooks=[stop_at(stop_loss, every)] if stop_loss is not None else [])
  t.after_fit = lambda state, _: {"curves": curves(sweep.trial_dir(workdir, t)), "seconds": lap() if lap else 0.0,
                                  "final_ema": np.asarray(state.ema[0]), "best_out": np.asarray(state.best_out[0])}
  return t


def fitting_targets(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """The paper's Fig. 2 targets: the photo, the photo + N(0, sigma^2) noise, its pixels shuffled, uniform noise."""
  return {"image": clean, "image + noise": images.add_gaussian_noise(clean, sigma, rng),
          "shuffled pixels": images.shuffle_pixels(clean, rng),
          "uniform noise": rng.random(clean.shape).astype(np.float32)}


class CurveLog:
  """Writes every `every`-th step of each fit's curves to a metrics.jsonl and prints one progress line per fit."""

  def __init__(self, path: str, every: int, start: float):
    self.file, self.every, self.start = open(path, "w"), every, start  # pylint: disable=consider-using-with

  def __call__(self, task: str, method: str, seed: int, c: dict[str, np.ndarray]) -> None:
    for t in range(0, len(c["loss"]), self.every):
      rec = {"task": task, "method": method, "seed": seed, "step": t + 1, **{k: float(v[t]) for k, v in c.items()}}
      self.file.write(json.dumps(rec) + "\n")
    print(f"  {task:8s} {method:16s} seed {seed}: {len(c['loss'])} steps, loss {c['loss'][-1]:.5f}, "
          f"peak PSNR {c['psnr'].max():.2f} dB  [{time.time() - self.start:.0f} s]", flush=True)

  def close(self) -> None:
    self.file.close()


def run_fits(workdir: str, trials: list[sweep.Trial], log: Callable | None = None, stop_loss: float | None = None,
             every: int = 1) -> list[dict]:
  """`sweep.run_trials` of DIP fits; each record gains a "summary": `summarise(curves, stop_loss)`, the parameter
  count, the seconds and the curves thinned to every `every`-th step; `log(task, method, seed, curves)` per fit."""
  records = sweep.run_trials(workdir, trials, progress=False)
  for r in records:
    c = r["curves"]
    r["summary"] = {**summarise(c, stop_loss), "num_params": r["params"], "seconds": r["seconds"],
                    "psnr_curve": c["psnr"][::every].tolist(), "ema_curve": c["psnr_ema"][::every].tolist()}
    if log is not None:
      log(r.get("task", "fit"), r.get("method", r.get("target", "")), r["seed"], c)
  return records


def seeded_photos(names: tuple[str, ...], seed_base: int, n: int, size: int, crop: float = 1.0):
  """(index, seed, name, photo) for seeds seed_base .. seed_base + n - 1: seed s takes photo s mod len(names), so a
  disjoint seed set draws other noise, masks, inits and codes on the same photos."""
  for i, seed in enumerate(range(seed_base, seed_base + n)):
    name = names[seed % len(names)]
    yield i, seed, name, images.load(name, size, crop)
