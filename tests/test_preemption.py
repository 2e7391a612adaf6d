"""Preemption and damaged checkpoints: nothing is lost, nothing silently wrong."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cnnlab import models
from cnnlab.report import rendering as reporting
from cnnlab.training import steps, tasks, train
from cnnlab.errors import Preempted
from cnnlab.training.metric_writer import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mlp():
  return models.create("mlp", hidden=(16,))


def params_of(state):
  return jax.tree.map(np.asarray, jax.device_get(state.params))


def same_params(a, b):
  jax.tree.map(np.testing.assert_array_equal, params_of(a), params_of(b))


@pytest.fixture
def cfg(tiny_train_config):
  tiny_train_config.steps, tiny_train_config.log_every, tiny_train_config.checkpoint_every = 12, 4, 8
  return tiny_train_config


@pytest.mark.parametrize("kill_at,device_data", [(3, True), (9, True), (9, False)])
def test_sigterm_checkpoints_and_resume_is_exact(digits, cfg, tmp_path, kill_at, device_data):
  cfg.device_data = device_data
  full, _ = train.fit(cfg, mlp(), digits, str(tmp_path / "full"), seed=0)

  def program_and_maybe_signal(*args):
    step_fn, inputs = tasks.SUPERVISED.program(*args)

    def signalling():
      for n, step_inputs in enumerate(inputs, 1):  # fit takes one item per step
        if n == kill_at:
          os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled by the real handler
        yield step_inputs

    return steps.Program(step_fn, signalling())

  signalling_task = dataclasses.replace(tasks.SUPERVISED, program=program_and_maybe_signal)
  with pytest.raises(Preempted) as e:
    train.fit(cfg, mlp(), digits, str(tmp_path / "cut"), seed=0, task=signalling_task)
  assert e.value.step == kill_at and e.value.signum == signal.SIGTERM
  resumed, _ = train.fit(cfg, mlp(), digits, str(tmp_path / "cut"), seed=0)
  same_params(resumed, full)
  assert read_metrics(str(tmp_path / "cut")) == read_metrics(str(tmp_path / "full"))
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def _largest_data_file(step_dir):
  files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs
           if os.sep + "d" + os.sep in os.path.join(r, f) + os.sep]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["truncate", "flip_bytes"])
def test_damaged_latest_checkpoint_falls_back_to_previous(digits, cfg, tmp_path, capfd, damage):
  cfg.steps, cfg.checkpoint_every = 8, 4
  train.fit(cfg, mlp(), digits, str(tmp_path / "run"), seed=0)
  target = _largest_data_file(str(tmp_path / "run" / "checkpoints" / "8"))
  blob = bytearray(open(target, "rb").read())
  if damage == "truncate":
    blob = blob[:len(blob) // 2]
  else:
    mid = len(blob) // 2
    blob[mid:mid + 64] = bytes(255 - b for b in blob[mid:mid + 64])
  open(target, "wb").write(bytes(blob))
  capfd.readouterr()

  cfg.steps = 12
  resumed, _ = train.fit(cfg, mlp(), digits, str(tmp_path / "run"), seed=0)
  err = capfd.readouterr().err
  assert "warning: checkpoint 8" in err and "unreadable" in err and "previous one" in err
  assert os.path.isdir(tmp_path / "run" / "corrupt_checkpoint_8")
  reference, _ = train.fit(cfg, mlp(), digits, str(tmp_path / "reference"), seed=0)
  same_params(resumed, reference)


@pytest.mark.slow
def test_killing_run_py_repeatedly_loses_nothing(tmp_path):
  """SIGTERM a real `run.py` at random moments until it finishes; results equal an uninterrupted run."""
  args = ["--exp=weight_sharing", "--quick", "--config.seeds=1", "--config.train.steps=60",
          "--config.train.checkpoint_every=20", "--config.train.log_every=5", "--config.train.progress=False"]
  # No persistent compile cache: the reference run would fill it and the killed runs would then be faster.
  env = dict(os.environ, JAX_PLATFORMS="cpu", CNNLAB_JAX_CACHE="off")
  ref = subprocess.Popen([sys.executable, "run.py", *args, f"--workdir={tmp_path / 'ref'}"], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  ref.stdout.readline()
  start = time.time()
  _, err = ref.communicate(timeout=600)
  assert ref.returncode == 0, err[-2000:]
  # Kill moments within the first 80% of an uninterrupted run after its start line (its length varies with
  # the machine's speed and load), so that the first kill lands before the run can finish.
  latest = max(0.6, 0.8 * (time.time() - start))
  rng = np.random.default_rng(0)
  kills = 0
  for attempt in range(4):  # three random kills, then a run left to finish
    proc = subprocess.Popen([sys.executable, "run.py", *args, f"--workdir={tmp_path / 'cut'}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait for the start line (printed once the handler is installed; before it, a signal just ends a
    # process that has done nothing yet), then kill at a random moment: compiling, training or saving.
    first = proc.stdout.readline()
    assert first.startswith("cnnlab:"), first
    time.sleep(rng.uniform(0.5, latest))
    if proc.poll() is None and attempt < 3:
      proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
      break
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Resume with: python run.py" in err and "Traceback" not in err
    kills += 1
  assert proc.returncode == 0 and kills >= 1
  strip = lambda r: {k: v for k, v in r.items() if k != "records"}
  a = reporting.read_json(str(tmp_path / "ref" / "results.json"))
  b = reporting.read_json(str(tmp_path / "cut" / "results.json"))
  assert strip(a) == strip(b) and a["records"] == b["records"]
  for trial in os.listdir(tmp_path / "ref" / "trials"):
    assert read_metrics(str(tmp_path / "ref" / "trials" / trial)) == read_metrics(str(tmp_path / "cut" / "trials" / trial))
