"""Two processes on 127.0.0.1 (2 CPU devices each) train like one process on one device."""

import os
import socket
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest

from cnnlab import models
from cnnlab.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="simulates hosts with CPU processes")
def test_two_processes_match_one(digits, tmp_path):
  port, out = free_port(), tmp_path / "params.npz"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "multihost_worker.py"), str(port), str(i),
                             str(tmp_path / "run"), str(out)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    logs = [p.communicate(timeout=300)[0] for p in procs]
  finally:
    for p in procs:  # never leave a worker behind, whatever happened
      if p.poll() is None:
        p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  multi = np.load(out)
  cfg = train.get_config()
  cfg.update(dict(steps=6, batch_size=32, eval_batch_size=200, log_every=2, checkpoint_every=3, progress=False,
                  tensorboard=False))
  state, summary = train.fit(cfg, models.create("cnn", features=(4, 8)), digits, str(tmp_path / "single"), seed=0)
  single = {"/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(jax.device_get(state.params)).items()}
  for k, v in single.items():
    np.testing.assert_allclose(multi[k], v, atol=1e-5, err_msg=k)
  np.testing.assert_allclose(float(multi["test_loss"]), summary["test_loss"], atol=1e-5)
