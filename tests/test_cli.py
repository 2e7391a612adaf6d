"""run.py: every user error is one line on stderr and exit code 2; --list works."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=300):
  return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_list_shows_every_experiment_with_its_claim():
  import experiments
  proc = run_cli("--list")
  assert proc.returncode == 0, proc.stderr
  for name in experiments.names():
    assert name in proc.stdout
  assert "Weight sharing makes conv layers" in proc.stdout


@pytest.mark.parametrize("args,expected", [
    (["--exp=no_such_exp"], "unknown experiment 'no_such_exp'"),
    ([], "give an experiment"),
    (["--exp=weight_sharing", "--config.no_such_key=1"], "no_such_key"),
    (["--exp=weight_sharing", "--config.train.stepz=5"], "stepz"),
    (["--exp=weight_sharing", "--config.train.steps=abc"], "steps"),
    (["--exp=weight_sharing", "--quick", "--config.kernel_size=20", "--workdir={tmp}/k"], "larger than"),
    (["--exp=weight_sharing", "--quick", "--config.data.name=tfds:mnist", "--config.data.download=False",
      "--config.data.data_dir={tmp}/tfds", "--workdir={tmp}/d"], "'mnist' is not prepared"),
    (["--exp=weight_sharing", "--quick", "--config.data.name=digitz", "--workdir={tmp}/u"], "unknown dataset"),
    (["--exp=weight_sharing", "--workdir=/proc/cannot_write_here"], "cannot write to workdir"),
    (["--exp=weight_sharing", "--config.train_fractions=nan"], "train_fractions must be a tuple like"),
    (["--exp=weight_sharing", "--config.features=(4,2.5)"], "features must be a tuple like"),
    (["--exp=weight_sharing", "--quick", "--config.features=(-1,)", "--workdir={tmp}/f"], "must be positive"),
])
def test_user_errors_are_one_line_and_exit_2(args, expected, tmp_path):
  proc = run_cli(*[a.format(tmp=tmp_path) for a in args])
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr[-2000:]
