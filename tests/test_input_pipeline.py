"""The batch of step t depends only on (seed, t): resumes and multi-host reads are exact."""

import itertools

import jax
import numpy as np
import pytest

from cnnlab.training import input_pipeline
from cnnlab.errors import UserError

X = np.arange(50, dtype=np.float32).reshape(50, 1, 1, 1)
Y = np.arange(50, dtype=np.int32)


def take(it, n):
  return list(itertools.islice(it, n))


def test_each_epoch_is_a_permutation_without_repeats():
  batches = take(input_pipeline.train_batches(X, Y, 8, seed=0), 6)  # 6 batches of 8 = one epoch (2 dropped)
  seen = np.concatenate([b["y"] for b in batches])
  assert len(set(seen.tolist())) == 48
  np.testing.assert_array_equal(batches[0]["x"][:, 0, 0, 0], batches[0]["y"])


def test_starting_mid_stream_equals_continuing():
  full = take(input_pipeline.train_batches(X, Y, 8, seed=3), 20)
  resumed = take(input_pipeline.train_batches(X, Y, 8, seed=3, start_step=13), 7)
  for a, b in zip(full[13:], resumed):
    np.testing.assert_array_equal(a["y"], b["y"])


def test_seeds_differ():
  a = take(input_pipeline.train_batches(X, Y, 8, seed=0), 1)[0]["y"]
  b = take(input_pipeline.train_batches(X, Y, 8, seed=1), 1)[0]["y"]
  assert not np.array_equal(a, b)


def test_process_rows_partition_the_global_batch():
  full = take(input_pipeline.train_batches(X, Y, 8, seed=0), 3)
  halves = [take(input_pipeline.train_batches(X, Y, 8, seed=0, rows=slice(i * 4, (i + 1) * 4)), 3) for i in (0, 1)]
  for t in range(3):
    np.testing.assert_array_equal(np.concatenate([halves[0][t]["y"], halves[1][t]["y"]]), full[t]["y"])


def test_eval_batches_cover_every_example_once_with_mask():
  batches = list(input_pipeline.eval_batches(X, Y, 16))
  assert [len(b["y"]) for b in batches] == [16, 16, 16, 16]
  mask = np.concatenate([b["mask"] for b in batches])
  ys = np.concatenate([b["y"] for b in batches])
  assert mask.sum() == 50
  np.testing.assert_array_equal(ys[mask == 1], Y)


def test_batch_larger_than_dataset_is_a_user_error():
  with pytest.raises(UserError):
    next(input_pipeline.train_batches(X, Y, 64, seed=0))


def test_device_batches_are_the_host_batches_in_order_and_read_ahead_at_most_a_chunk():
  from cnnlab.training import parallel  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh()
  host = take(input_pipeline.train_batches(X, Y, 8, seed=1), 11)
  consumed = []
  source = (consumed.append(b) or b for b in host)
  device = parallel.device_batches(source, mesh, chunk=4)
  first = next(device)
  assert len(consumed) == 4 and first["x"].sharding == parallel.data_sharding(mesh)
  out = [first, *device]  # 11 batches: chunks of 4, 4 and 3, then the source ends
  assert len(out) == 11
  for a, b in zip(out, host):
    np.testing.assert_array_equal(np.asarray(a["x"]), b["x"])
    np.testing.assert_array_equal(np.asarray(a["y"]), b["y"])


@pytest.mark.parametrize("start", [0, 5, 6])  # from the start, mid-epoch (a resume), at an epoch boundary
def test_device_gathered_batches_are_the_host_batches(start):
  from cnnlab.training import device_data, parallel  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh()
  host = take(input_pipeline.train_batches(X, Y, 8, seed=2, start_step=start), 14)  # 6 per epoch: crosses two
  data = device_data.put(X, Y, mesh)
  gather = jax.jit(device_data.gather, static_argnums=3)
  for step, (perm, b) in enumerate(zip(device_data.epoch_permutations(len(X), 8, 2, mesh, start), host), start):
    got = gather(data, perm, step, 8)
    np.testing.assert_array_equal(np.asarray(got["x"]), b["x"])
    np.testing.assert_array_equal(np.asarray(got["y"]), b["y"])


def test_device_data_is_only_for_one_process_and_sets_that_fit():
  from cnnlab.training import device_data  # pylint: disable=g-import-not-at-top
  assert device_data.fits(X, Y) and not device_data.fits(X, Y, enabled=False)
  big = np.broadcast_to(np.zeros((), np.float32), (device_data.MAX_BYTES // 4 + 1,))  # no memory behind it
  assert not device_data.fits(big, Y)
  with pytest.raises(UserError):
    next(device_data.epoch_permutations(len(X), 64, 0, None))


def test_eval_batches_pad_per_pixel_labels():
  x, y = np.zeros((5, 4, 4, 1), np.float32), np.ones((5, 4, 4), np.int32)
  last = list(input_pipeline.eval_batches(x, y, 4))[-1]
  assert last["y"].shape == (4, 4, 4) and last["mask"].tolist() == [1, 0, 0, 0]
