"""Train-step speed of cnnlab's models on this machine, against PyTorch eager when torch is installed.

  python benchmarks/train_step.py                    # every model, ~5 min on 2 CPU cores; JSON in benchmarks/results/
  python benchmarks/train_step.py --quick --models=ws_cnn --no-torch   # smoke test
  python benchmarks/train_step.py --no-baseline      # skip the "naive flax" column (faster)
  python benchmarks/train_step.py --models=resnet20 --bfloat16 --no-torch   # bfloat16 compute vs float32

Per model: compile time (first step), steady-state steps/s (median of repeated timed runs), images/s,
achieved GFLOP/s (6 x multiply-adds per example: forward + backward, the usual convention) and its fraction
of the peak measured with a large float32 matmul in the same run; with torch (`pip install -e ".[bench]"`,
CPU wheel, `torch.set_num_threads(2)` unless --torch-threads) the same architecture's eager Adam step, timed
interleaved with JAX's so that both see the same machine load, and the ratio. Also the input pipeline's
images/s alone. With --bfloat16, the same step with `train.compute_dtype=bfloat16` (bfloat16 forward and
backward, float32 parameters and optimizer state), timed interleaved, and its speed-up. The "naive flax"
column is the same cnnlab step traced with plain flax conv and reduce_window pooling
(`kernels.specialise(model, "xla")`), timed interleaved too. On a loaded machine (load average above the core
count) every number is unreliable, PyTorch's multi-threaded kernels most of all: the load average is printed
at the start and the end.
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

from cnnlab import kernels, models
from cnnlab.ops import flops
from cnnlab.data import Dataset
from cnnlab.training import device_data, dip, input_pipeline, parallel, state as state_lib, tasks, train

TORCH_THREADS = 2
# Untimed pause before each timed run, so that the previous runner's worker threads (PyTorch's OpenMP pool spins
# after its kernels) are parked and do not compete with the next one: without it JAX's MLP steps measured
# ~25% slower when interleaved with PyTorch than alone.
SETTLE_S = 0.2

# name -> (cnnlab model name, kwargs, example shape (H, W, C), batch, torch twin (module, kwargs) or None, note)
MODELS = {
    "lenet_like": ("cnn", dict(features=(6, 16), kernel_size=5, padding="VALID", hidden=(120, 84)), (28, 28, 1), 128,
                   ("cnn", dict(features=(6, 16), kernel_size=5, padding="VALID", hidden=(120, 84))),
                   "conv5x5x6-pool-conv5x5x16-pool-120-84-10 (issue #6)"),
    "lenet5": ("lenet5", {}, (28, 28, 1), 128, ("lenet5", {}), "LeCun 1998: C3 table, trainable subsampling, RBF"),
    "ws_cnn": ("cnn", dict(features=(8, 16), kernel_size=3), (28, 28, 1), 64,
               ("cnn", dict(features=(8, 16), kernel_size=3)), "weight_sharing CNN"),
    "ws_lcn": ("lcn", dict(features=(8, 16), kernel_size=3), (28, 28, 1), 64,
               ("cnn", dict(features=(8, 16), kernel_size=3, local=True)), "weight_sharing locally-connected net"),
    "ws_mlp": ("mlp", dict(hidden=(256, 256)), (28, 28, 1), 64, ("mlp", dict(hidden=(256, 256))), "weight_sharing MLP"),
    "mlp_1000": ("mlp", dict(hidden=(1000, 1000)), (28, 28, 1), 128, ("mlp", dict(hidden=(1000, 1000))),
                 "784-1000-1000-10 (issue #6)"),
    "alexnet_67": ("alexnet", dict(num_classes=10), (67, 67, 3), 32, ("alexnet", dict(size=67, num_classes=10)),
                   "paper AlexNet (grouped, LRN), 67x67 input, 10 classes"),
    "segnet": ("segnet", dict(features=(8, 16, 32), num_classes=11, upsample="transposed"), (32, 32, 1), 32, None,
               "segmentation's encoder-decoder (stride-2 transposed convs), per-pixel labels"),
    "dip_skip": ("dip_skip", dict(width=32, depth=4, skip_width=4), (64, 64, 32), 1, None,
                 "deep_image_prior's skip net, 64x64, one image"),
    "resnet20": ("resnet20", {}, (32, 32, 3), 128, None, "He et al. 2016 CIFAR ResNet-20 with BatchNorm (0.27M)"),
}
QUICK_SKIP = ("alexnet_67",)
OPTIONAL = ("resnet20",)  # models left out of the default set (ResNet-20's CPU step takes seconds)


def peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  """float32 matmul GFLOP/s of an n x n x n product (median of `repeats`)."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / np.median(times) / 1e9


def jax_runner(name: str, model, shape, batch_size: int, mesh, fast: bool = True, compute_dtype: str = "float32"):
  """(run(n) -> None, compile seconds): n steps of the program `train.fit` runs (its data path included).

  Random data: 4 batches' worth on the device, each step gathering its batch there (DIP: one random image).
  `fast=False` traces a fresh jit of the same step with cnnlab's CPU fast paths off (plain flax layers);
  `compute_dtype` is `train.compute_dtype`.
  """
  choice = "auto" if fast else "xla"
  model = kernels.specialise(model, choice)
  rng = np.random.default_rng(0)
  if name.startswith("dip"):
    target = rng.random((shape[0], shape[1], 3), dtype=np.float32)
    task, config, data = dip.task(), dip.train_config(1, 0.01), dip.problem(target, target, 0, shape[-1])
  else:
    task, config = tasks.SUPERVISED, train.get_config()
    config.batch_size = batch_size
    n = 4 * batch_size
    x = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, 10, (n, *shape[:-1]) if name.startswith("seg") else (n,)).astype(np.int32)  # per pixel/image
    data = Dataset(name, x, y, x[:1], y[:1], num_classes=10)
  config.kernels = choice
  config.compute_dtype = compute_dtype
  init_rng, step_rng = task.keys(0)
  # A specialised model is a new apply_fn: the cached init and step are traced afresh for it.
  state = task.create_state(model, state_lib.make_optimizer(config), init_rng, data, mesh)
  step, inputs = task.program(config, data, 0, 0, mesh)
  holder = [state]
  t = time.perf_counter()
  holder[0], metrics = step(holder[0], *next(inputs), step_rng)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t

  def run(n: int) -> None:
    for _ in range(n):
      holder[0], m = step(holder[0], *next(inputs), step_rng)
    jax.block_until_ready(m)

  run(2)
  return run, compile_s


def torch_runner(spec, shape, batch_size: int, jax_params: int):
  """n eager Adam steps of the PyTorch twin, or None without torch; asserts equal parameter counts."""
  try:
    import torch
    from benchmarks import torch_models
  except ImportError:
    return None
  torch.set_num_threads(TORCH_THREADS)
  kind, kwargs = spec
  kwargs = dict(kwargs)
  if kind == "cnn":
    kwargs.update(size=shape[0], in_channels=shape[-1])
  net = getattr(torch_models, kind)(**kwargs)
  n = torch_models.count_params(net)
  assert n == jax_params, f"PyTorch twin has {n} parameters, cnnlab's model {jax_params}"
  run = torch_models.step_runner(net, (batch_size, *shape))
  run(2)
  return run


def time_interleaved(runners: dict, steps: int, repeats: int) -> dict[str, list[float]]:
  """steps/s of each runner over `repeats` rounds; within a round the runners take turns."""
  rates = {k: [] for k in runners}
  for _ in range(repeats):
    for k, run in runners.items():
      time.sleep(SETTLE_S)
      t = time.perf_counter()
      run(steps)
      rates[k].append(steps / (time.perf_counter() - t))
  return rates


def input_pipeline_rate(shape, batch_size: int, mesh, seconds: float = 1.0, device: bool = True) -> float:
  """images/s of the data path alone, as `train.fit` uses it, on 4,000 examples (as mnist5k).

  device=True: the training set on the device, each batch gathered there (`device_data`), here as its own
  jitted call per batch (in `fit` the gather runs inside the step). device=False: the host pipeline that
  multi-process runs and sets over `device_data.MAX_BYTES` use (`train_batches` + `device_batches`).
  """
  x = np.random.default_rng(0).random((4000, *shape), dtype=np.float32)
  y = np.zeros(4000, np.int32)
  if device:
    data, gather = device_data.put(x, y, mesh), jax.jit(device_data.gather, static_argnums=3)
    perms = device_data.epoch_permutations(len(x), batch_size, 0, mesh)
    batches = (gather(data, perm, step, batch_size) for step, perm in enumerate(perms))
  else:
    batches = parallel.device_batches(input_pipeline.train_batches(x, y, batch_size, seed=0), mesh)
  for _ in range(16):  # warm-up: the first transfers of a process are slower
    jax.block_until_ready(next(batches))
  n, t = 0, time.perf_counter()
  while time.perf_counter() - t < seconds:  # dispatched ahead as `fit` does, waited for at the end
    batch = next(batches)
    n += 1
  jax.block_until_ready(batch)
  return n * batch_size / (time.perf_counter() - t)


def uses_fast_paths(model, shape) -> bool:
  """Whether cnnlab's fast paths change the traced forward pass of `model` at all."""
  x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  jaxprs = [str(jax.make_jaxpr(kernels.specialise(model, choice).apply)(variables, x)) for choice in ("auto", "xla")]
  return jaxprs[0] != jaxprs[1]


def benchmark(names, quick: bool, use_torch: bool, baseline: bool, bfloat16: bool = False) -> dict:
  mesh = parallel.make_mesh()
  peak = peak_gflops(1024 if quick else 2048)
  rows = []
  for name in names:
    model_name, kwargs, shape, batch_size, twin, note = MODELS[name]
    model = models.create(model_name, **kwargs)
    x_shape = (1, *shape)
    macs = flops.total_macs(model, x_shape)
    params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(x_shape, jnp.float32))["params"]))
    run, compile_s = jax_runner(name, model, shape, batch_size, mesh)
    runners = {"jax": run}
    if baseline and uses_fast_paths(model, shape):
      runners["naive"], naive_compile_s = jax_runner(name, model, shape, batch_size, mesh, fast=False)
    if bfloat16:
      runners["bf16"], bf16_compile_s = jax_runner(name, model, shape, batch_size, mesh, compute_dtype="bfloat16")
    if use_torch and twin is not None:
      t_run = torch_runner(twin, shape, batch_size, params)
      if t_run is not None:
        runners["torch"] = t_run
    # About 0.4 s (quick: 0.1 s) per timed run, at least 3 steps.
    t = time.perf_counter()
    run(3)
    steps = max(3, int((0.1 if quick else 0.4) * 3 / (time.perf_counter() - t)))
    rates = time_interleaved(runners, steps, 3 if quick else 5)
    sps = float(np.median(rates["jax"]))
    row = {"model": name, "note": note, "params": params, "batch": batch_size, "input": list(shape),
           "compile_s": compile_s, "steps_per_s": sps, "steps_per_s_runs": rates["jax"],
           "images_per_s": sps * batch_size, "gflops": 6 * macs * batch_size * sps / 1e9}
    row["peak_fraction"] = row["gflops"] / peak
    if "naive" in rates:
      row.update(naive_compile_s=naive_compile_s, naive_steps_per_s=float(np.median(rates["naive"])),
                 naive_steps_per_s_runs=rates["naive"])
      row["speedup_vs_naive"] = sps / row["naive_steps_per_s"]
    if "bf16" in rates:
      row.update(bf16_compile_s=bf16_compile_s, bf16_steps_per_s=float(np.median(rates["bf16"])),
                 bf16_steps_per_s_runs=rates["bf16"])
      row["bf16_speedup"] = row["bf16_steps_per_s"] / sps
    if "torch" in rates:
      row["torch_steps_per_s"] = float(np.median(rates["torch"]))
      row["torch_steps_per_s_runs"] = rates["torch"]
      row["ratio"] = sps / row["torch_steps_per_s"]
    rows.append(row)
    print(format_row(row), flush=True)
  # The data path alone at each 28x28 model's batch size, against that model's consumption.
  pipeline, host_pipeline = {}, {}
  for r in rows:
    if tuple(r["input"]) == (28, 28, 1) and r["batch"] not in pipeline:
      pipeline[r["batch"]] = input_pipeline_rate((28, 28, 1), r["batch"], mesh, 0.3 if quick else 1.0)
      host_pipeline[r["batch"]] = input_pipeline_rate((28, 28, 1), r["batch"], mesh, 0.3 if quick else 1.0, False)
  ratios = {r["model"]: pipeline[r["batch"]] / r["images_per_s"] for r in rows if r["batch"] in pipeline
            and tuple(r["input"]) == (28, 28, 1)}
  return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "loadavg_start": _loadavg(), "jax": jax.__version__, "backend": jax.default_backend(),
          "devices": jax.device_count(), "cpu_count": os.cpu_count(), "quick": quick,
          "torch_threads": TORCH_THREADS if any("torch_steps_per_s" in r for r in rows) else None,
          "peak_matmul_gflops": peak, "rows": rows,
          "input_pipeline": {"images_per_s_by_batch": pipeline, "ratio_to_step_by_model": ratios,
                             "host_images_per_s_by_batch": host_pipeline}}


HEADER = ("| model | params | batch | compile (s) | naive flax steps/s | steps/s | images/s | GFLOP/s | % peak | "
          "PyTorch steps/s | JAX / PyTorch | bfloat16 steps/s | bfloat16 / float32 |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def format_row(r: dict) -> str:
  torch_cols = (f"{r['torch_steps_per_s']:.1f} | {r['ratio']:.2f}x" if "ratio" in r else "– | –")
  naive = f"{r['naive_steps_per_s']:.1f}" if "naive_steps_per_s" in r else "same code"
  bf16 = f"{r['bf16_steps_per_s']:.1f} | {r['bf16_speedup']:.2f}x" if "bf16_speedup" in r else "– | –"
  return (f"| {r['model']} | {r['params']:,} | {r['batch']} | {r['compile_s']:.1f} | {naive} | "
          f"{r['steps_per_s']:.1f} | {r['images_per_s']:,.0f} | {r['gflops']:.1f} | {100 * r['peak_fraction']:.1f} | "
          f"{torch_cols} | {bf16} |")


def _loadavg() -> str:
  try:
    with open("/proc/loadavg") as f:
      return " ".join(f.read().split()[:3])
  except OSError:
    return "n/a"


def main() -> None:
  global TORCH_THREADS
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=",".join(n for n in MODELS if n not in OPTIONAL),
                 help=f"comma-separated subset of {', '.join(MODELS)}")
  p.add_argument("--quick", action="store_true", help="3 timed runs per model and no AlexNet (smoke test)")
  p.add_argument("--no-torch", dest="torch", action="store_false", help="JAX columns only")
  p.add_argument("--torch-threads", type=int, default=TORCH_THREADS, help="torch.set_num_threads (default 2)")
  p.add_argument("--no-baseline", dest="baseline", action="store_false",
                 help="skip the baseline column (the step with plain flax conv and pooling)")
  p.add_argument("--bfloat16", action="store_true",
                 help="also time each step with train.compute_dtype=bfloat16, interleaved, and the speed-up")
  p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/train_step-<time>.json)")
  args = p.parse_args()
  TORCH_THREADS = args.torch_threads
  names = [n.strip() for n in args.models.split(",") if n.strip()]
  unknown = [n for n in names if n not in MODELS]
  if unknown:
    p.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
  if args.quick and args.models == p.get_default("models"):
    names = [n for n in names if n not in QUICK_SKIP]
  print(f"load average {_loadavg()}; jax {jax.__version__} on {jax.device_count()} {jax.default_backend()} device(s)"
        f"\n{HEADER}", flush=True)
  result = benchmark(names, args.quick, args.torch, args.baseline, args.bfloat16)
  result["loadavg_end"] = _loadavg()
  ip = result["input_pipeline"]
  rates = ", ".join(f"{v:,.0f} images/s at batch {k}" for k, v in ip["images_per_s_by_batch"].items())
  ratios = ", ".join(f"{k} {v:.0f}x" for k, v in ip["ratio_to_step_by_model"].items())
  host = ", ".join(f"{v:,.0f} at batch {k}" for k, v in ip["host_images_per_s_by_batch"].items())
  print(f"\npeak float32 matmul: {result['peak_matmul_gflops']:.0f} GFLOP/s; input pipeline alone (training set on "
        f"the device, batches gathered there): {rates or 'n/a'}"
        f"{'; that is, times what the step consumes: ' + ratios if ratios else ''}; host pipeline (multi-process "
        f"runs, sets over 1 GiB): {host or 'n/a'}; load average {result['loadavg_end']}")
  out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                 f"train_step-{time.strftime('%Y%m%d-%H%M%S')}.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=1)
  print(f"JSON: {out}")


if __name__ == "__main__":
  main()
