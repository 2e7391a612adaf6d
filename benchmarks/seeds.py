"""Seeds as a batch axis: trainings/s of one S-seed program (`train.fit_seeds`) vs S single-seed programs.

  python benchmarks/seeds.py             # weight_sharing's CNN / LCN / MLP, 10 seeds; JSON in benchmarks/results/
  python benchmarks/seeds.py --quick     # fewer timed steps (smoke test)
  python benchmarks/seeds.py --end-to-end   # also whole trainings: S `fit`s one after another vs one `fit_seeds`

Per model, in the same run and interleaved (so all see the same machine load): the steady-state step time of
the single-seed program `train.fit` runs, of the seeded program `train.fit_seeds` runs (S seeds, each its own
training subset, batch order and init) in both `seed_batching` forms ('map': lax.map, one seed's single-seed ops
at a time; 'vmap': S-times-wider ops, convs with per-seed weights one conv per seed, `kernels.seeded`), for the
CNN the vmapped step with plain XLA ops (lax's batching rule: one grouped conv), and the PyTorch twin's eager
step (a PyTorch user trains seeds one after another); compile times; achieved GFLOP/s (6 x multiply-adds per
example) as a fraction of a float32 matmul peak measured in this run. Timings depend on the machine and its
load: compare them within one run.
"""

import argparse
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from cnnlab.runtime import xla_flags

xla_flags.apply()  # before JAX starts: XLA reads $XLA_FLAGS once

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnlab import data, kernels, models
from cnnlab.ops import analysis, flops
from cnnlab.training import parallel, seeds as seeds_lib, state as state_lib, tasks, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import peak_gflops, torch_runner  # noqa: E402

MODELS = {  # weight_sharing's nets (its default config)
    "ws_cnn": ("cnn", dict(features=(8, 16), kernel_size=3)),
    "ws_lcn": ("lcn", dict(features=(8, 16), kernel_size=3)),
    "ws_mlp": ("mlp", dict(hidden=(256, 256))),
}
TORCH_TWINS = {  # benchmarks/torch_models.py specs of the same nets (parameter counts asserted equal)
    "ws_cnn": ("cnn", dict(features=(8, 16), kernel_size=3)),
    "ws_lcn": ("cnn", dict(features=(8, 16), kernel_size=3, local=True)),
    "ws_mlp": ("mlp", dict(hidden=(256, 256))),
}


def end_to_end(model, sets, cfg, seeds) -> tuple[float, float]:
  """Wall seconds of len(seeds) `train.fit` runs one after another and of one `train.fit_seeds` over them (fresh
  workdirs: checkpoints, metrics and evaluations included, compiles excluded by a warm-up of each)."""
  import tempfile  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.progress, cfg.seed_group = False, len(seeds)
  with tempfile.TemporaryDirectory() as d:
    warm = ml_collections.ConfigDict(cfg.to_dict())
    warm.steps = warm.checkpoint_every = 2
    train.fit(warm, model, sets[0], f"{d}/w", seeds[0])
    train.fit_seeds(warm, model, sets, [f"{d}/w{s}" for s in seeds], seeds)
    t = time.perf_counter()
    for ds, s in zip(sets, seeds):
      train.fit(cfg, model, ds, f"{d}/single{s}", s)
    single = time.perf_counter() - t
    t = time.perf_counter()
    train.fit_seeds(cfg, model, sets, [f"{d}/seeded{s}" for s in seeds], seeds)
    return single, time.perf_counter() - t


def config(kernels_choice: str = "auto", seed_batching: str = "auto"):
  c = train.get_config()
  c.steps, c.batch_size, c.kernels, c.seed_batching = 300, 64, kernels_choice, seed_batching  # weight_sharing's
  return c


def single_runner(model, ds, cfg, seed: int = 0):
  """(run(n): n steps of `fit`'s single-seed program, compile seconds)."""
  mesh = parallel.make_mesh()
  init_rng, step_rng = tasks.SUPERVISED.keys(seed)
  model = kernels.specialise(model, cfg.kernels)
  state = tasks.SUPERVISED.create_state(model, state_lib.make_optimizer(cfg), init_rng, ds, mesh)
  return _timed(tasks.SUPERVISED.program(cfg, ds, seed, 0, mesh), state, step_rng)


def seeded_runner(model, sets, cfg, seeds):
  """(run(n): n steps of `fit_seeds`' program over len(seeds) seeds, compile seconds)."""
  mesh = parallel.make_seed_mesh(len(seeds), cfg.seed_devices)
  keys = [tasks.SUPERVISED.keys(s) for s in seeds]
  step_rngs = jax.device_put(jnp.stack([k[1] for k in keys]), parallel.seed_sharding(mesh))
  model = kernels.specialise(model, cfg.kernels)
  state = state_lib.create_seed_states(model, state_lib.make_optimizer(cfg), jnp.stack([k[0] for k in keys]),
                                       sets[0].example_shape, mesh)
  return _timed(seeds_lib.program(cfg, sets, tuple(seeds), 0, mesh), state, step_rngs)


def _timed(program, state, rng):
  """(run(n): n steps of `program` from `state`, seconds of the first step, which compiles)."""
  box = [state]

  def run(n):
    for _ in range(n):
      box[0], metrics = program.step(box[0], *next(program.inputs), rng)
    jax.block_until_ready(metrics)

  t = time.perf_counter()
  run(1)
  return run, time.perf_counter() - t


def interleaved(runners: dict, steps: int, repeats: int) -> dict[str, float]:
  """Median seconds per step of each runner, timed in turns."""
  times = {k: [] for k in runners}
  for _ in range(repeats):
    for k, run in runners.items():
      t = time.perf_counter()
      run(steps)
      times[k].append((time.perf_counter() - t) / steps)
  return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", type=int, default=10)
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--quick", action="store_true", help="fewer timed steps")
  p.add_argument("--data", default="mnist5k", help="registered dataset (weight_sharing's default: mnist5k)")
  p.add_argument("--end-to-end", action="store_true", help="also time whole trainings: S fits vs one fit_seeds")
  p.add_argument("--no-torch", action="store_true", help="skip the PyTorch twins")
  p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/seeds-<time>.json)")
  args = p.parse_args()
  unknown = [n for n in args.models.split(",") if n not in MODELS]
  if unknown:
    p.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
  steps, repeats = (5, 3) if args.quick else (20, 5)
  c = data.get_config()
  c.name = args.data
  ds = data.load(c)
  seeds = list(range(args.seeds))
  sets = [data.subsample(ds, 0.3, s) for s in seeds]  # a 30% cell: each seed its own subset
  load = os.getloadavg()[0]
  peak = peak_gflops(1024 if args.quick else 2048)
  rows = []
  for name in args.models.split(","):
    model_name, kwargs = MODELS[name]
    model = models.create(model_name, num_classes=ds.num_classes, **kwargs)
    macs = flops.total_macs(model, (1, *ds.example_shape))
    cfg = config(seed_batching="map")
    single, single_compile = single_runner(model, sets[0], cfg)
    seeded, seeded_compile = seeded_runner(model, sets, cfg, seeds)
    runners = {"single": single, "seeded": seeded}
    runners["seeded_vmap"], vmap_compile = seeded_runner(model, sets, config(seed_batching="vmap"), seeds)
    if model_name == "cnn":
      runners["seeded_vmap_xla"], _ = seeded_runner(model, sets, config("xla", "vmap"), seeds)
    n_params = analysis.count_params(model.init(jax.random.key(0), jnp.zeros((1, *ds.example_shape)))["params"])
    twin = None if args.no_torch else torch_runner(TORCH_TWINS[name], ds.example_shape, cfg.batch_size, n_params)
    if twin is not None:
      runners["torch"] = lambda n, twin=twin: twin(n)
    t = interleaved(runners, steps, repeats)
    step_flops = 6 * macs * cfg.batch_size
    row = {"model": name, "seeds": len(seeds), "single_ms": 1e3 * t["single"], "seeded_ms": 1e3 * t["seeded"],
           "speedup": len(seeds) * t["single"] / t["seeded"],
           "single_trainings_per_s": 1 / (cfg.steps * t["single"]),
           "seeded_trainings_per_s": len(seeds) / (cfg.steps * t["seeded"]),
           "single_compile_s": single_compile, "seeded_compile_s": seeded_compile,
           "single_peak_fraction": step_flops / t["single"] / 1e9 / peak,
           "seeded_peak_fraction": len(seeds) * step_flops / t["seeded"] / 1e9 / peak}
    row["seeded_vmap_ms"], row["vmap_compile_s"] = 1e3 * t["seeded_vmap"], vmap_compile
    row["vmap_speedup"] = len(seeds) * t["single"] / t["seeded_vmap"]
    if "seeded_vmap_xla" in t:
      row["seeded_vmap_xla_ms"] = 1e3 * t["seeded_vmap_xla"]
    if "torch" in t:  # a PyTorch user trains the seeds one after another
      row["torch_ms"] = 1e3 * t["torch"]
      row["vs_torch"] = t["torch"] / min(t["seeded"], t["seeded_vmap"]) * len(seeds)
      row["single_vs_torch"] = t["torch"] / t["single"]
    if args.end_to_end:
      row["fits_s"], row["fit_seeds_s"] = end_to_end(model, sets, config(seed_batching="vmap"), seeds)
    rows.append(row)
  result = {"time": datetime.datetime.now().isoformat(timespec="seconds"), "backend": jax.default_backend(),
            "cpu_count": os.cpu_count(), "load_before": load, "load_after": os.getloadavg()[0],
            "peak_matmul_gflops": peak, "data": args.data, "quick": args.quick, "rows": rows}
  out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                 f"seeds-{result['time'].replace(':', '')}.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
  print(f"{len(seeds)} seeds, batch 64, {config().steps} steps per training; peak float32 matmul {peak:.0f} GFLOP/s; "
        f"load average {load:.1f} -> {result['load_after']:.1f} on {os.cpu_count()} cores\n")
  print("Step times (ms) in one interleaved run. single: one seed's step (`fit`); seeded map / vmap: one step of "
        "all seeds as one program (`fit_seeds`, seed_batching 'map' / 'vmap'); vmap xla: vmapped with plain XLA "
        "ops; torch: the PyTorch twin's eager step. Speed-up: S singles (or S torch steps, seeds one after "
        "another) over the faster seeded program.\n")
  print("| model | single | seeded map | seeded vmap | vmap xla | torch | speed-up vs S singles | vs S torch | "
        "% peak single / seeded | compile s single / map / vmap | end to end: S fits / fit_seeds (s) |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    best = min(r["seeded_ms"], r["seeded_vmap_ms"])
    cell = lambda k, f="{:.1f}": f.format(r[k]) if k in r else "-"
    e2e = f"{r['fits_s']:.1f} / {r['fit_seeds_s']:.1f}" if "fits_s" in r else "-"
    print(f"| {r['model']} | {r['single_ms']:.2f} | {r['seeded_ms']:.1f} | {r['seeded_vmap_ms']:.1f} | "
          f"{cell('seeded_vmap_xla_ms')} | {cell('torch_ms', '{:.2f}')} | {r['seeds'] * r['single_ms'] / best:.2f}x | "
          f"{cell('vs_torch', '{:.2f}x')} | {100 * r['single_peak_fraction']:.1f} / {100 * r['seeded_peak_fraction']:.1f} | "
          f"{r['single_compile_s']:.1f} / {r['seeded_compile_s']:.1f} / {r['vmap_compile_s']:.1f} | {e2e} |")
  print(f"\nJSON: {out}")


if __name__ == "__main__":
  main()
