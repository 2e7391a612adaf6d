"""Data parallelism: 8 simulated CPU devices give the same training as 1 device, with the batch really sharded."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from cnnlab import models
from cnnlab.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    from jax.sharding import PartitionSpec as P
    from cnnlab import data, models
    from cnnlab.training import parallel, train
    assert jax.device_count() == 8, jax.devices()
    mesh = parallel.make_mesh()
    batch = parallel.shard_batch({"x": np.zeros((32, 8, 8, 1), np.float32), "y": np.zeros(32, np.int32)}, mesh)
    assert batch["x"].sharding.spec == P("data"), batch["x"].sharding
    assert {s.data.shape for s in batch["x"].addressable_shards} == {(4, 8, 8, 1)}
    assert len({s.device for s in batch["x"].addressable_shards}) == 8
    c = data.get_config(); c.name = "digits"
    cfg = train.get_config()
    cfg.update(dict(steps=6, batch_size=32, eval_batch_size=200, log_every=2, checkpoint_every=3,
                    progress=False, tensorboard=False))
    for device_data in (True, False):  # the training set on the devices (batches gathered there), or host batches
      cfg.device_data = device_data
      state, summary = train.fit(cfg, models.create("cnn", features=(4, 8)), data.load(c),
                                 f"{sys.argv[1]}-{device_data}", seed=0)
      assert state.params["conv0"]["kernel"].sharding.is_fully_replicated
      flat = {"/".join(k): np.asarray(v) for k, v in
              __import__("flax").traverse_util.flatten_dict(jax.device_get(state.params)).items()}
      np.savez(f"{sys.argv[2]}-{device_data}.npz", test_loss=summary["test_loss"], **flat)
""")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="compares simulated CPU devices with this CPU process")
def test_eight_devices_match_one(digits, tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = tmp_path / "multi"
  # A timeout: a collective deadlock must fail this test, not hang the suite.
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "multi"), str(out)], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]

  assert jax.device_count() == 1
  cfg = train.get_config()
  cfg.update(dict(steps=6, batch_size=32, eval_batch_size=200, log_every=2, checkpoint_every=3,
                  progress=False, tensorboard=False))
  state, summary = train.fit(cfg, models.create("cnn", features=(4, 8)), digits, str(tmp_path / "single"), seed=0)
  import flax
  single = {"/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(jax.device_get(state.params)).items()}
  for device_data in (True, False):
    multi = np.load(f"{out}-{device_data}.npz")
    assert set(single) == set(multi.files) - {"test_loss"}
    for k, v in single.items():
      np.testing.assert_allclose(multi[k], v, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(float(multi["test_loss"]), summary["test_loss"], atol=1e-5)
