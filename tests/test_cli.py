"""run.py: every user error is one line on stderr and exit code 2, before anything is written; --list works."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=300):
  return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_list_shows_every_experiment_with_its_claim_and_nothing_else():
  import experiments
  proc = run_cli("--list")
  assert proc.returncode == 0, proc.stderr
  listed = [line.split()[0] for line in proc.stdout.splitlines()]
  assert listed == experiments.names() and "report" not in listed
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
    (["--exp=param_count", "--config.alexnet_input=" + "9" * 500, "--workdir={tmp}/a"], "alexnet_input must be in"),
    (["--exp=weight_sharing", "--config.train_fractions=(1.5,)", "--workdir={tmp}/t"], "train_fractions must lie"),
    (["--exp=param_count", "--workdir="], "--workdir is empty"),
    (["--exp=param_count", "--workdir=  "], "--workdir is empty"),
    (["--exp=param_count", "--report"], "not both"),
    (["--report", "--config.experiments=param_count,nope", "--workdir={tmp}/r"], "no experiment with claims called"),
    (["--report", "--config.readme={tmp}/no_readme.md", "--workdir={tmp}/r"], "cannot read README"),
    (["--report", "--config.no_such=1"], "unknown config field 'no_such' for the report"),
])
def test_user_errors_are_one_line_and_exit_2(args, expected, tmp_path):
  proc = run_cli(*[a.format(tmp=tmp_path) for a in args])
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr[-2000:]
  assert not [p for p in tmp_path.iterdir()], "a refused command wrote to the disk"


def test_a_long_bad_value_is_shortened_in_the_message(tmp_path):
  proc = run_cli("--exp=weight_sharing", "--quick", f"--config.data.name={'x' * 5000}", f"--workdir={tmp_path}/w")
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1 and "unknown dataset" in lines[0], proc.stderr[-2000:]
  assert len(lines[0]) < 600 and " chars)..." in lines[0]
  assert not (tmp_path / "w").exists()


def test_a_failed_validation_leaves_no_workdir_and_the_corrected_command_runs(tmp_path):
  workdir = tmp_path / "new" / "run"
  small = ["--exp=weight_sharing", "--quick", "--config.seeds=1", "--config.train_fractions=(1.0,)",
           "--config.train.progress=False", f"--workdir={workdir}"]
  proc = run_cli(*small, "--config.train.steps=-5")
  assert proc.returncode == 2 and "train.steps must be a positive integer" in proc.stderr, proc.stderr[-2000:]
  assert not (tmp_path / "new").exists()
  proc = run_cli(*small, "--config.train.steps=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (workdir / "results.json").exists()


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
  from cnnlab import workdir as workdirs
  with workdirs.claim(str(tmp_path)):
    proc = run_cli("--exp=param_count", "--quick", f"--workdir={tmp_path}")
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
  assert f"in use by process {os.getpid()}" in lines[0]
  assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing written by the refused process
  assert run_cli("--exp=param_count", "--quick", f"--workdir={tmp_path}").returncode == 0  # released on exit


def test_disk_full_is_one_line_naming_the_path_and_exit_1(tmp_path):
  """results.json cannot be written (ENOSPC): one line naming it, exit code 1, no traceback."""
  code = ("import errno, sys; from cnnlab.report import rendering as r; w = r.write_json\n"
          "def full(path, obj):\n"
          "  if path.endswith('results.json'): raise OSError(errno.ENOSPC, 'No space left on device', path)\n"
          "  w(path, obj)\n"
          "r.write_json = full; import run; sys.exit(run.main(sys.argv))")
  args = ["--exp=param_count", "--quick", f"--workdir={tmp_path}/w"]
  proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
  assert "no space left" in lines[0] and str(tmp_path / "w" / "results.json") in lines[0]


def test_report_command_writes_the_report(tmp_path):
  proc = run_cli("--report", "--quick", "--config.experiments=param_count", "--config.workers=1",
                 f"--workdir={tmp_path}/r")
  assert proc.returncode == 0, proc.stderr[-3000:]
  md = (tmp_path / "r" / "REPORT.md").read_text()
  assert "## The claims ledger" in md and "## Provenance" in md and "python run.py --report --quick" in md
