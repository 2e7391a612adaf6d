"""Seeds as a batch axis: the programs `train.fit_seeds` runs on a state with a leading seed axis.

Seed i's slice of every array is what a single-seed run of seed i holds, each seed with its own training set
and batch order. `train.seed_batching` says how one program steps every seed:
- "vmap": `train_step` and `eval_step` vmapped over the seed axis (`spmd_axis_name="seed"`, so a sharding
  constraint inside the step keeps the seed axis on the mesh's "seed" devices): S-times-wider ops, what should
  fill an accelerator (not measured there yet). Always used when the seed axis spans several devices.
- "map": `jax.lax.map` over the seeds, each seed's single-seed ops in turn inside the one compiled program
  (no grouped convs). On XLA:CPU a vmapped conv with per-seed weights becomes a grouped conv (lax's batching
  rule), slower than S separate convs; mapped steps were slower still for the CNN and MLP, so neither form beat
  separate single-seed programs for small conv nets there (benchmarks/seeds.py).
"""

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from cnnlab.errors import UserError
from cnnlab.training import checkpoint, device_data, input_pipeline, parallel, steps


def stackable(datasets: Sequence[Any]) -> bool:
  """Whether these training sets can be stacked along a seed axis (same shapes and dtypes, split by split)."""
  first = datasets[0]
  sig = lambda d: ([(getattr(d, f"{a}_{s}").shape, getattr(d, f"{a}_{s}").dtype) for a in "xy"
                    for s in ("train", "test")], d.num_classes)
  return all(hasattr(d, "x_train") for d in datasets) and all(sig(d) == sig(first) for d in datasets)


def _shared(arrays: Sequence[np.ndarray]) -> bool:
  """The same array object for every seed (e.g. the untouched test set): kept once, not stacked."""
  return all(a is arrays[0] for a in arrays)


def restore(ckpts: Sequence[checkpoint.Checkpointer], state: Any, mesh: Mesh) -> Any | None:
  """`state` (stacked, step 0) with every seed restored from its checkpoint at the newest step all seeds saved.

  `state` itself when no seed has a checkpoint; None when some have and they share no intact step.
  """
  saved = [set(c.all_steps()) for c in ckpts]
  if not any(saved):
    return state
  one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=parallel.replicated(mesh)), state)
  while common := set.intersection(*saved):
    step = max(common)
    restored = [c.restore(step, one) for c in ckpts]
    if all(r is not None for r in restored):
      return jax.device_put(jax.tree.map(lambda *xs: jnp.stack(xs), *restored), parallel.seed_sharding(mesh))
    saved = [set(c.all_steps()) for c in ckpts]  # a damaged one was moved aside
  return None


BATCHING = ("vmap", "map")


def batching(choice: str, mesh: Mesh) -> str:
  """The `train.seed_batching` used on `mesh`: "vmap" whenever the seed axis spans several devices."""
  if choice not in BATCHING:
    raise UserError(f"unknown seed_batching {choice!r}; use one of {BATCHING}")
  # lax.map would step a sharded seed axis one (gathered) seed at a time: seeds over devices are vmapped.
  return "vmap" if mesh.shape["seed"] > 1 else choice


def _over_seeds(fn: Callable, in_axes: tuple, how: str) -> Callable:
  """`fn` over the leading seed axis of the arguments whose in_axes is 0 (None: shared by every seed)."""
  if how == "vmap":
    return jax.vmap(fn, in_axes=in_axes, spmd_axis_name="seed")

  def mapped(*args):
    def one(per_seed):
      it = iter(per_seed)
      return fn(*[next(it) if ax == 0 else a for a, ax in zip(args, in_axes)])

    return jax.lax.map(one, tuple(a for a, ax in zip(args, in_axes) if ax == 0))

  return mapped


@functools.lru_cache(maxsize=None)
def compiled_steps(mesh: Mesh, r: steps.Recipe = steps.Recipe(), shared_eval: bool = True, how: str = "vmap"):
  """`steps.compiled_steps` over seeds: (S, B, ...) batches; eval batches (B, ...) when `shared_eval`."""
  seed, seed_data = parallel.seed_sharding(mesh), parallel.seed_data_sharding(mesh)
  train = jax.jit(_over_seeds(steps.bound_step(r), (0, 0, 0), how), in_shardings=(seed, seed_data, seed),
                  out_shardings=(seed, seed), donate_argnums=0)
  eval_ = _over_seeds(functools.partial(steps.eval_step, loss=r.loss), (0, None if shared_eval else 0), how)
  evaluate_ = jax.jit(eval_, in_shardings=(seed, parallel.data_sharding(mesh) if shared_eval else seed_data),
                      out_shardings=seed)
  return train, evaluate_


@functools.lru_cache(maxsize=None)
def compiled_gather_step(mesh: Mesh, batch_size: int, r: steps.Recipe = steps.Recipe(), shared_data: bool = False,
                         how: str = "vmap"):
  """`steps.compiled_gather_step` over seeds: per-seed permutations, per-seed (or one `shared_data`) set."""
  seed, seed_data = parallel.seed_sharding(mesh), parallel.seed_data_sharding(mesh)
  train_step = steps.bound_step(r)
  # Gathered vmapped whatever `how`: mapping over per-seed sets would copy each seed's whole set every step.
  gather = jax.vmap(functools.partial(device_data.gather, batch_size=batch_size),
                    in_axes=(None if shared_data else 0, 0, 0), spmd_axis_name="seed")

  def step(state, dataset, perm, rng):
    batch = jax.lax.with_sharding_constraint(gather(dataset, perm, state.step), seed_data)
    return _over_seeds(train_step, (0, 0, 0), how)(state, batch, rng)

  return jax.jit(step, in_shardings=(seed, parallel.replicated(mesh) if shared_data else seed, seed, seed),
                 out_shardings=(seed, seed), donate_argnums=0)


def program(config: ml_collections.ConfigDict, datasets: Sequence[Any], seeds: tuple[int, ...], start: int,
            mesh: Mesh) -> steps.Program:
  """`steps.program` for every seed at once: seed i's batches are those `steps.program` gives seeds[i]."""
  parallel.check_batch_size(config.batch_size, mesh)
  xs, ys = [d.x_train for d in datasets], [d.y_train for d in datasets]
  shared = _shared(xs) and _shared(ys)
  n, copies = len(xs[0]), 1 if shared else len(xs)
  seed, how = parallel.seed_sharding(mesh), batching(config.seed_batching, mesh)
  if device_data.fits(xs[0], ys[0], config.device_data) and copies * (xs[0].nbytes + ys[0].nbytes) <= \
      device_data.MAX_BYTES:
    data = (device_data.put(xs[0], ys[0], mesh) if shared
            else jax.device_put({"x": np.stack(xs), "y": np.stack(ys)}, seed))
    perms = device_data.seed_epoch_permutations(n, config.batch_size, seeds, seed, start)
    step = compiled_gather_step(mesh, config.batch_size, steps.recipe(config), shared, how)
    return steps.Program(step, ((data, perm) for perm in perms))
  per_seed = [input_pipeline.train_batches(x, y, config.batch_size, s, start) for x, y, s in zip(xs, ys, seeds)]
  stacked = ({k: np.stack([b[k] for b in group]) for k in group[0]} for group in zip(*per_seed))
  batches = parallel.device_batches(stacked, mesh, sharding=parallel.seed_data_sharding(mesh))
  return steps.Program(compiled_steps(mesh, steps.recipe(config), True, how)[0],
                       ((batch,) for batch in batches))


def evaluate(state: Any, datasets: Sequence[Any], config: ml_collections.ConfigDict, mesh: Mesh,
             splits: Sequence[str]) -> list[dict[str, dict[str, float]]]:
  """Per seed, {split: mean of each per-example value of `config.loss`}, as `tasks.SUPERVISED.evaluate` gives."""
  parallel.check_batch_size(config.eval_batch_size, mesh)
  out = [{} for _ in datasets]
  for split in splits:
    xs, ys = [getattr(d, f"x_{split}") for d in datasets], [getattr(d, f"y_{split}") for d in datasets]
    shared = _shared(xs) and _shared(ys)
    _, eval_fn = compiled_steps(mesh, steps.recipe(config), shared, batching(config.seed_batching, mesh))
    if shared:
      batches = (jax.device_put(b, parallel.data_sharding(mesh))
                 for b in input_pipeline.eval_batches(xs[0], ys[0], config.eval_batch_size))
    else:
      per_seed = [input_pipeline.eval_batches(x, y, config.eval_batch_size) for x, y in zip(xs, ys)]
      batches = (jax.device_put({k: np.stack([b[k] for b in group]) for k in group[0]},
                                parallel.seed_data_sharding(mesh)) for group in zip(*per_seed))
    totals = None
    for batch in batches:
      sums = eval_fn(state, batch)
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    for i, values in enumerate(out):
      values[split] = {k: float(v[i] / totals["count"][i]) for k, v in totals.items() if k != "count"}
  return out
