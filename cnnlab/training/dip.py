"""Deep Image Prior fitting: a generator maps a fixed random code to one image; the clean image is tracked.

The step is pure and jitted once per model and shape. It is dispatched one step at a time from the host
rather than chunked with `lax.scan`: on XLA:CPU a convolution inside a loop body runs ~5x slower than the
same step outside one (measured here: ~175-300 vs ~32-60 ms/step for a 122k-parameter net on 64x64; see
jax-ml/jax#12868), which dwarfs the ~0.1 ms dispatch cost; full unrolling restores the speed but took
minutes to compile. Metrics stay on the device until the end of a chunk of steps.
"""

import dataclasses
import functools
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from cnnlab.metrics import image as image_metrics
from cnnlab.runtime import prng
from cnnlab.training import train
from cnnlab.errors import TrainingDiverged


class DipState(train_state.TrainState):
  """Params and Adam state, plus the running output average and the best output seen (for figures)."""
  ema: jax.Array          # exponential moving average of the outputs (the paper's smoothing variant)
  best_out: jax.Array     # output at the highest PSNR to the clean image so far: oracle, never optimised on
  best_psnr: jax.Array
  # Leaves, not static fields, so that every fit of one model and image size shares one compiled step.
  reg_noise_std: jax.Array
  ema_decay: jax.Array


def input_code(rng: jax.Array, size: int, channels: int, scale: float = 0.1) -> jax.Array:
  """The fixed network input z: U(0, scale) noise of shape (1, size, size, channels), as in the paper."""
  return scale * jax.random.uniform(rng, (1, size, size, channels))


@functools.lru_cache(maxsize=None)
def _init_fn(model: nn.Module, learning_rate: float) -> Callable[..., DipState]:
  """One jitted state constructor per (model, rate): equal models then share apply_fn and tx, so the step
  compiles once, and init is not dispatched op by op (eager init took ~38 s for the 35k-parameter net)."""
  tx = optax.adam(learning_rate)

  @jax.jit
  def init(rng, z, reg_noise_std, ema_decay):
    params = model.init(rng, z)["params"]
    out = jax.eval_shape(lambda p: model.apply({"params": p}, z), params)
    # Separate buffers: `dip_step` donates the state, and one buffer cannot be donated twice.
    return DipState.create(apply_fn=model.apply, params=params, tx=tx, ema=jnp.zeros(out.shape, out.dtype),
                           best_out=jnp.zeros(out.shape, out.dtype), best_psnr=jnp.full((), -jnp.inf, jnp.float32),
                           reg_noise_std=reg_noise_std, ema_decay=ema_decay)
  return init


def create_state(model: nn.Module, z: jax.Array, rng: jax.Array, learning_rate: float,
                 reg_noise_std: float = 0.0, ema_decay: float = 0.99) -> DipState:
  """Initialises the model on `z` and Adam, with the output buffers shaped like the model's output."""
  return _init_fn(model, learning_rate)(rng, z, jnp.float32(reg_noise_std), jnp.float32(ema_decay))


def masked_mse(out: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """MSE over the observed entries only (`mask` is 1 where a pixel is known, broadcast over channels)."""
  mask = jnp.broadcast_to(mask, out.shape)
  return jnp.sum(mask * jnp.square(out - target)) / jnp.maximum(jnp.sum(mask), 1.0)


@functools.partial(jax.jit, donate_argnums=0)
def dip_step(state: DipState, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[DipState, dict]:
  """One Adam step on the masked MSE to `batch['target']`; metrics include PSNR to `batch['clean']`."""
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


@dataclasses.dataclass
class FitResult:
  """Per-step curves (numpy, one entry per step) and the images at the end of a fit."""
  curves: dict[str, np.ndarray]   # loss, psnr, psnr_ema, grad_norm of the output at each step (as trained)
  final_ema: np.ndarray           # (H, W, C) exponential average after the last step
  best_out: np.ndarray            # (H, W, C) output at the best PSNR step
  num_params: int
  seconds: float


def make_batch(target: np.ndarray, clean: np.ndarray, z: jax.Array, mask: np.ndarray | None = None) -> dict:
  """Device batch for `dip_step` from (H, W, C) images and an optional (H, W, 1) keep-mask."""
  mask = np.ones(target.shape[:2] + (1,), np.float32) if mask is None else mask
  return {"z": z, "target": jnp.asarray(target)[None], "clean": jnp.asarray(clean)[None],
          "mask": jnp.asarray(mask)[None]}


def fit(model: nn.Module, target: np.ndarray, clean: np.ndarray, *, steps: int, seed: int, learning_rate: float,
        code_channels: int, reg_noise_std: float = 0.0, ema_decay: float = 0.99, mask: np.ndarray | None = None,
        chunk: int = 100, stop_at: float | None = None) -> FitResult:
  """Fits `model(z)` to `target` for `steps` Adam steps from a seed-determined init and code z.

  With `stop_at`, the fit ends early at the end of the first chunk of steps in which the loss reached it
  (the curves are then shorter than `steps`).
  """
  with prng.classic_threefry():  # fast to compile, and 4x faster noise than rbg keys on XLA:CPU
    start = time.time()
    init_rng, code_rng, noise_rng = jax.random.split(jax.random.key(seed), 3)
    z = input_code(code_rng, target.shape[0], code_channels)
    state = create_state(model, z, init_rng, learning_rate, reg_noise_std, ema_decay)
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
    batch = make_batch(target, clean, z, mask)
    chunks: list[dict[str, np.ndarray]] = []
    pending: list[dict] = []
    for t in range(steps):
      state, metrics = dip_step(state, batch, noise_rng)
      pending.append(metrics)
      if len(pending) == chunk or t == steps - 1:
        # One host sync per chunk; a NaN stops the fit here rather than at the end.
        fetched = {k: np.asarray(jax.device_get([m[k] for m in pending])) for k in pending[0]}
        if not np.all(np.isfinite(fetched["loss"])):
          raise TrainingDiverged(f"DIP loss became non-finite near step {t}")
        chunks.append(fetched)
        pending = []
        if stop_at is not None and np.min(fetched["loss"]) <= stop_at:
          break
    curves = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    return FitResult(curves=curves, final_ema=np.asarray(state.ema[0]),
                     best_out=np.asarray(state.best_out[0]), num_params=num_params, seconds=time.time() - start)


def steps_to_reach(loss_curve: np.ndarray, threshold: float) -> int | None:
  """First step (1-based count of steps taken) whose loss is <= `threshold`; None if never reached."""
  hit = np.nonzero(np.asarray(loss_curve) <= threshold)[0]
  return int(hit[0]) + 1 if hit.size else None
