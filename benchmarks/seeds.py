"""Seeds as a batch axis: trainings/s of one S-seed program (`train.fit_seeds`) vs S single-seed programs.

  python benchmarks/seeds.py             # weight_sharing's CNN / LCN / MLP, 10 seeds; JSON in benchmarks/results/
  python benchmarks/seeds.py --quick     # fewer timed steps (smoke test)

Per model, in the same run and interleaved (so both see the same machine load): the steady-state step time of
the single-seed program `train.fit` runs and of the seeded program `train.fit_seeds` runs (S seeds, each its own
training subset, batch order and init), compile times, trainings/s at weight_sharing's step count, the speed-up,
and achieved GFLOP/s (6 x multiply-adds per example) as a fraction of a float32 matmul peak measured in this run.
Then, for the CNN, the vmapped step with the CPU kernels ("auto") vs plain XLA ops ("xla"): under vmap a conv with
per-seed weights becomes one grouped conv (feature_group_count = S) in lax's batching rule. Both seeded
forms are timed: `seed_batching='map'` (lax.map, one seed's single-seed ops at a time) and 'vmap'. Timings depend on
the machine and its load: compare them within one run.
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
import numpy as np

from cnnlab import data, kernels, models
from cnnlab.ops import flops
from cnnlab.training import parallel, seeds as seeds_lib, state as state_lib, tasks, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import peak_gflops  # noqa: E402

MODELS = {  # weight_sharing's nets (its default config)
    "ws_cnn": ("cnn", dict(features=(8, 16), kernel_size=3)),
    "ws_lcn": ("lcn", dict(features=(8, 16), kernel_size=3)),
    "ws_mlp": ("mlp", dict(hidden=(256, 256))),
}


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
    runners["seeded_unroll"], unroll_compile = seeded_runner(model, sets, config(seed_batching="unroll"), seeds)
    if model_name == "cnn":
      runners["seeded_vmap_xla"], _ = seeded_runner(model, sets, config("xla", "vmap"), seeds)
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
    row["seeded_unroll_ms"], row["unroll_compile_s"] = 1e3 * t["seeded_unroll"], unroll_compile
    row["unroll_speedup"] = len(seeds) * t["single"] / t["seeded_unroll"]
    print(row)
    if "seeded_vmap_xla" in t:
      row["seeded_vmap_xla_ms"] = 1e3 * t["seeded_vmap_xla"]
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
  print("Seeded = one program over all seeds, lax.map (`seed_batching='map'`); vmap: the same program vmapped "
        "(the default); plain XLA: vmapped with `kernels='xla'`. ms/step of the seeded programs cover all seeds.\n")
  print("| model | single ms/step | seeded (map) ms/step | trainings/s single | trainings/s seeded | speed-up "
        "| % peak single / seeded | compile s single / map / vmap | vmap ms/step | vmap speed-up | vmap, plain XLA |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    xla = f"{r['seeded_vmap_xla_ms']:.1f}" if "seeded_vmap_xla_ms" in r else "-"
    print(f"| {r['model']} | {r['single_ms']:.2f} | {r['seeded_ms']:.1f} | {r['single_trainings_per_s']:.2f} | "
          f"{r['seeded_trainings_per_s']:.2f} | {r['speedup']:.2f}x | {100 * r['single_peak_fraction']:.1f} / "
          f"{100 * r['seeded_peak_fraction']:.1f} | {r['single_compile_s']:.1f} / {r['seeded_compile_s']:.1f} / "
          f"{r['vmap_compile_s']:.1f} | {r['seeded_vmap_ms']:.1f} | {r['vmap_speedup']:.2f}x | {xla} |")
  print(f"\nJSON: {out}")


if __name__ == "__main__":
  main()
