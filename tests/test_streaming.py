"""Streamed datasets: the in-memory pipeline's batches read from array_record files, exact resume, disjoint
per-process reads, full evaluation, `fit` on them, and the choice between memory and streaming."""

import itertools
import os
import pickle
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from cnnlab import data, models
from cnnlab.data import prepared, streaming
from cnnlab.errors import UserError
from cnnlab.training import input_pipeline, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def take(it, n):
  return list(itertools.islice(it, n))


def _config(data_dir, mode, **kw):
  c = data.get_config()
  c.update(dict(name="tfds:cnnlab_tiny_digits", data_dir=data_dir, streaming=mode, **kw))
  return c


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
  """cnnlab_tiny_digits (40 train / 20 test 8x8 digits) prepared as array_record, once per session."""
  import tensorflow_datasets as tfds
  import tiny_tfds  # noqa: F401  (registers the builder)
  d = str(tmp_path_factory.mktemp("tfds"))
  tfds.builder("cnnlab_tiny_digits", data_dir=d).download_and_prepare(file_format="array_record")
  return d


@pytest.fixture(scope="session")
def memory(tiny_dir):
  return data.load(_config(tiny_dir, "memory"))


@pytest.fixture(scope="session", params=streaming.SOURCES)
def both(request, tiny_dir, memory):
  """(in memory, streamed) views of the same TFDS dataset, streamed from TFDS's records or their prepared copy."""
  return memory, data.load(_config(tiny_dir, "stream", stream_from=request.param))


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_streamed_batches_are_the_in_memory_batches(both):
  mem, st = both
  assert isinstance(mem, data.Dataset) and isinstance(st, streaming.StreamedDataset)
  assert (st.name, st.num_classes, st.example_shape, st.n_train, st.n_test) == (
      mem.name, mem.num_classes, mem.example_shape, len(mem.x_train), len(mem.x_test))
  for rows in (slice(None), slice(4, 8)):  # the whole global batch, and process 1 of 2's rows
    expected = take(input_pipeline.train_batches(mem.x_train, mem.y_train, 8, seed=3, rows=rows), 12)  # 2+ epochs
    assert_batches_equal(take(st.train_batches(8, seed=3, rows=rows), 12), expected)


def test_resuming_at_step_k_reads_the_tail_of_a_run_from_0(both):
  _, st = both
  full = take(st.train_batches(8, seed=5), 13)
  assert_batches_equal(take(st.train_batches(8, seed=5, start_step=7), 6), full[7:])
  assert not np.array_equal(full[0]["y"], take(st.train_batches(8, seed=6), 1)[0]["y"])


def test_eval_batches_cover_every_example_once_padded_and_masked(both):
  mem, st = both
  for split in ("train", "test"):
    x, y = getattr(mem, f"x_{split}"), getattr(mem, f"y_{split}")
    for rows in (slice(None), slice(0, 3), slice(3, 6)):  # 40 and 20 examples in batches of 6: padded tails
      assert_batches_equal(list(st.eval_batches(split, 6, rows)), list(input_pipeline.eval_batches(x, y, 6, rows)))
    got = list(st.eval_batches(split, 6))
    assert sum(b["mask"].sum() for b in got) == len(x)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in got])[:len(x)], x)


class _IdSource:
  """A random-access source whose record i is an image holding i (so a batch says which records it read)."""

  def __init__(self, n, dtype=np.uint8):
    self.n, self.dtype = n, dtype

  def __len__(self):
    return self.n

  def __getitems__(self, ids):
    return [{"image": np.full((2, 2, 1), i, self.dtype), "label": i % 10} for i in ids]


def _ids(batch):
  return np.round(batch["x"][:, 0, 0, 0] * 255).astype(int).tolist()


def test_each_process_reads_a_disjoint_share_that_together_covers_the_global_batches():
  split = streaming.Split(streaming.Records(_IdSource(50), "image", "label"))
  ds = streaming.StreamedDataset("ids", split, split, 10, (2, 2, 1))
  per_epoch = 50 // 10
  reads = [sum((_ids(b) for b in take(ds.train_batches(10, seed=1, rows=slice(p * 5, (p + 1) * 5)), per_epoch)), [])
           for p in (0, 1)]
  assert len(reads[0]) == len(reads[1]) == 25 and not set(reads[0]) & set(reads[1])
  whole = sum((_ids(b) for b in take(ds.train_batches(10, seed=1), per_epoch)), [])
  assert sorted(reads[0] + reads[1]) == sorted(whole) == list(range(50))


def test_holdout_split_of_a_set_without_a_test_split():
  tr, te = streaming.holdout(50, 0.2, seed=0)
  assert len(te) == 10 and sorted(np.concatenate([tr, te]).tolist()) == list(range(50))
  np.testing.assert_array_equal(streaming.holdout(50, 0.2, seed=0)[1], te)
  split = streaming.Split(streaming.Records(_IdSource(50), "image", "label"), index=te)
  assert _ids(split.read(np.arange(10))) == te.tolist()


def test_a_prepared_split_reads_what_its_records_read_and_is_prepared_once(tmp_path):
  records = streaming.Records(_IdSource(10000, np.uint16), "image", "label")  # > one preparation chunk
  where = str(tmp_path / "cnnlab_prepared" / "train")
  arrays = prepared.open_or_prepare(records, where)
  assert len(arrays) == 10000
  assert sorted(os.listdir(tmp_path / "cnnlab_prepared")) == ["train", "train.lock"]  # no temporary folder left
  ids = np.array([9999, 3, 4097, 3, 0])
  for a, b in zip(arrays.arrays(ids), records.arrays(ids)):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
  stamp = os.path.getmtime(os.path.join(where, "x.npy"))
  assert os.path.getmtime(os.path.join(prepared.open_or_prepare(records, where).directory, "x.npy")) == stamp
  # Pickled (to grain's worker processes) as its folder, not its arrays.
  arrays.arrays(ids)
  clone = pickle.loads(pickle.dumps(arrays))
  assert len(pickle.dumps(arrays)) < 500
  np.testing.assert_array_equal(clone.arrays(ids)[0], records.arrays(ids)[0])
  # A copy of another length (the records changed) or without its meta file (interrupted) is prepared again.
  shorter = streaming.Records(_IdSource(30), "image", "label")
  assert len(prepared.open_or_prepare(shorter, where)) == 30
  os.remove(os.path.join(where, "meta.json"))
  np.testing.assert_array_equal(prepared.open_or_prepare(shorter, where).arrays(np.arange(30))[0],
                                shorter.arrays(np.arange(30))[0])


def test_prepared_tfds_splits_sit_beside_the_tfds_files(both, tiny_dir):
  _, st = both
  if isinstance(st.train.source, prepared.Arrays):
    assert st.train.source.directory.startswith(tiny_dir) and st.test.source.directory.endswith("test")


@pytest.mark.slow  # starting two worker processes (each importing JAX, grain and TFDS) takes 10-20 s here
def test_worker_processes_serve_the_same_batches(both):
  import dataclasses
  _, st = both
  with_workers = dataclasses.replace(st, workers=2)
  assert_batches_equal(take(with_workers.train_batches(8, seed=3, start_step=2), 7),
                       take(st.train_batches(8, seed=3, start_step=2), 7))


def test_fit_on_a_streamed_set_trains_and_resumes_as_in_memory(both, tiny_train_config, tmp_path):
  mem, st = both
  cfg = tiny_train_config
  # Host batches in memory too (one compiled step for all three fits; test_train shows device batches equal them).
  cfg.update(dict(steps=6, batch_size=8, eval_batch_size=16, log_every=3, checkpoint_every=3, device_data=False))
  model = models.create("cnn", features=(4, 8))
  ref_state, ref = train.fit(cfg, model, mem, str(tmp_path / "memory"), seed=0)
  cfg.steps = 3  # a streamed run stopped at step 3, then continued to 6 from its checkpoint
  train.fit(cfg, model, st, str(tmp_path / "stream"), seed=0)
  cfg.steps = 6
  state, summary = train.fit(cfg, model, st, str(tmp_path / "stream"), seed=0)
  assert summary == ref and summary["steps"] == 6
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), jax.device_get(ref_state.params))


def test_auto_streams_only_a_training_set_over_the_size_limit(tiny_dir, monkeypatch):
  assert not streaming.choose("auto", streaming.MEMORY_BYTES) and streaming.choose("auto", streaming.MEMORY_BYTES + 1)
  assert streaming.choose("stream", 1) and not streaming.choose("memory", 10 * streaming.MEMORY_BYTES)
  assert isinstance(data.load(_config(tiny_dir, "auto")), data.Dataset)
  monkeypatch.setattr(streaming, "MEMORY_BYTES", 40 * 8 * 8 * 4 - 1)  # one byte under the float32 training set
  data._load.cache_clear()
  try:
    assert isinstance(data.load(_config(tiny_dir, "auto")), streaming.StreamedDataset)
    assert isinstance(data.load(_config(tiny_dir, "memory")), data.Dataset)
  finally:
    data._load.cache_clear()


@pytest.mark.parametrize("fields, match", [
    (dict(streaming="fast"), "data.streaming must be one of"),
    (dict(streaming="stream", stream_workers=-1), "data.stream_workers must be an integer >= 0"),
    (dict(name="digits", streaming="stream"), "reads TFDS datasets"),
    (dict(streaming="stream", stream_from="npy"), "data.stream_from must be one of"),
])
def test_bad_streaming_settings_are_one_line_user_errors(tiny_dir, fields, match):
  c = _config(tiny_dir, "auto")
  c.update(fields)
  with pytest.raises(UserError, match=match) as e:
    data.load(c)
  assert "\n" not in str(e.value)


WORKER = """
import sys
import jax
jax.config.update("jax_num_cpu_devices", 2)
from cnnlab.training import parallel
parallel.initialize_distributed(f"127.0.0.1:{sys.argv[1]}", num_processes=2, process_id=int(sys.argv[2]))
import numpy as np
import tiny_tfds  # noqa: F401
from cnnlab import data, models
from cnnlab.training import train
c = data.get_config()
c.update(dict(name="tfds:cnnlab_tiny_digits", data_dir=sys.argv[3], streaming="stream", stream_from=sys.argv[6]))
ds = data.load(c)
rows = parallel.process_rows(8)
batches = ds.train_batches(8, 0, rows=rows)
sums = [b["x"].reshape(len(b["x"]), -1).sum(1).round(3).tolist() for _, b in zip(range(5), batches)]
cfg = train.get_config()
cfg.update(dict(steps=4, batch_size=8, eval_batch_size=16, log_every=2, checkpoint_every=2, progress=False,
                tensorboard=False))
state, summary = train.fit(cfg, models.create("cnn", features=(4, 8)), ds, sys.argv[4], seed=0)
np.savez(sys.argv[5], rows=np.array(sums), test_loss=summary["test_loss"])
jax.distributed.shutdown()
"""


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="simulates hosts with CPU processes")
@pytest.mark.parametrize("source", streaming.SOURCES)  # 'prepared': both processes prepare the same copy at once
def test_two_processes_read_disjoint_rows_and_train_as_one(memory, tiny_dir, tiny_train_config, tmp_path, source):
  fresh = str(tmp_path / "tfds")  # without a prepared copy: with 'prepared' both processes write one, racing
  shutil.copytree(tiny_dir, fresh, ignore=shutil.ignore_patterns("cnnlab_prepared"))
  from test_multihost import free_port
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=f"{ROOT}{os.pathsep}{os.path.join(ROOT, 'tests')}")
  env.pop("XLA_FLAGS", None)
  outs = [tmp_path / f"p{i}.npz" for i in range(2)]
  procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(port), str(i), fresh, str(tmp_path / "run"),
                             str(outs[i]), source], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  try:
    logs = [p.communicate(timeout=300)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  got = [np.load(o) for o in outs]
  mem = memory
  whole = [b["x"].reshape(8, -1).sum(1).round(3) for b in take(input_pipeline.train_batches(
      mem.x_train, mem.y_train, 8, seed=0), 5)]
  np.testing.assert_allclose(np.concatenate([got[0]["rows"], got[1]["rows"]], axis=1), np.array(whole), atol=1e-3)
  cfg = tiny_train_config
  cfg.update(dict(steps=4, batch_size=8, eval_batch_size=16, log_every=2, checkpoint_every=2))
  _, summary = train.fit(cfg, models.create("cnn", features=(4, 8)), mem, str(tmp_path / "single"), seed=0)
  np.testing.assert_allclose(float(got[0]["test_loss"]), summary["test_loss"], atol=1e-5)
