"""A workdir never lies: one writer, nothing left by a failed start, damaged files set aside, stale runs re-run."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import experiments
from cnnlab import provenance, runner, workdir as workdirs
from cnnlab.errors import UserError
from cnnlab.report import rendering

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(path):
  module = experiments.get("param_count")  # shapes only: a run takes about a second
  return runner.run_experiment(module, module.get_config(quick=True), str(path))


def _names(path):
  return sorted(os.listdir(path))


def test_a_second_claim_is_refused_naming_the_holder(tmp_path):
  with workdirs.claim(str(tmp_path)):
    with pytest.raises(workdirs.WorkdirBusy, match=f"in use by process {os.getpid()}"):
      with workdirs.claim(str(tmp_path)):
        pass
  with workdirs.claim(str(tmp_path)):  # released
    pass


def test_a_failed_start_removes_only_what_it_created(tmp_path):
  new = tmp_path / "a" / "b"
  with pytest.raises(UserError):
    with workdirs.claim(str(new)):
      rendering.write_json(str(new / "config.json"), {})
      raise UserError("bad")
  assert not (tmp_path / "a").exists()
  with pytest.raises(UserError):  # a parent it created but another run started in meanwhile stays
    with workdirs.claim(str(tmp_path / "p" / "x")):
      (tmp_path / "p" / "y").mkdir()
      raise UserError("bad")
  assert _names(tmp_path / "p") == ["y"]
  with pytest.raises(UserError):  # something beyond bookkeeping was written: it stays
    with workdirs.claim(str(new)):
      (new / "metrics.jsonl").write_text("{}\n")
      raise UserError("bad")
  assert (new / "metrics.jsonl").exists()
  old = tmp_path / "old"
  old.mkdir()
  with pytest.raises(UserError):  # a workdir that existed before is never removed
    with workdirs.claim(str(old)):
      raise UserError("bad")
  assert old.is_dir()


def test_an_invalid_config_touches_no_disk(tmp_path):
  module = experiments.get("weight_sharing")
  config = module.get_config(quick=True)
  config.train.steps = -5
  with pytest.raises(UserError, match="train.steps"):
    runner.run_experiment(module, config, str(tmp_path / "w"))
  config = module.get_config(quick=True)
  config.data.name = "tfds:mnist"
  config.data.download = False
  config.data.data_dir = str(tmp_path / "tfds")
  with pytest.raises(UserError, match="not prepared"):
    runner.run_experiment(module, config, str(tmp_path / "w"))
  assert _names(tmp_path) == []


def test_a_truncated_results_json_is_moved_aside_and_recomputed(tmp_path, capsys):
  _run(tmp_path)
  path = tmp_path / "results.json"
  whole = rendering.read_json(str(path))
  path.write_text(path.read_text()[:50])
  _run(tmp_path)
  assert rendering.read_json(str(path)) == whole
  assert "results.json is damaged" in capsys.readouterr().out
  assert any(n.startswith("results.json.damaged-") for n in _names(tmp_path))


def test_a_missing_or_damaged_config_json_is_rebuilt_only_from_the_recorded_stamp(tmp_path, capsys):
  _run(tmp_path)
  config = rendering.read_json(str(tmp_path / "config.json"))
  (tmp_path / "config.json").write_text("{trunc")
  _run(tmp_path)
  assert rendering.read_json(str(tmp_path / "config.json")) == config
  assert "rebuilt it from the run's recorded provenance" in capsys.readouterr().out
  # Nothing trustworthy left: no config.json, no stamp. Refused, not guessed from the command line.
  for name in ("config.json", "provenance.json", "run_info.json"):
    os.remove(tmp_path / name)
  with pytest.raises(UserError, match="no readable config.json or recorded provenance"):
    _run(tmp_path)
  # The report's planner moves such a run aside instead.
  module = experiments.get("param_count")
  assert runner.plan(module, module.get_config(quick=True), str(tmp_path)) == (
      "no readable config.json or recorded provenance")
  assert _names(tmp_path) == [".lock"]


def test_another_config_is_refused(tmp_path):
  _run(tmp_path)
  module = experiments.get("param_count")
  config = module.get_config(quick=True)
  config.lenet_input = 28
  with pytest.raises(UserError, match="different config .fields lenet_input"):
    runner.run_experiment(module, config, str(tmp_path))


def test_a_change_in_a_cnnlab_source_file_marks_cached_results_stale(tmp_path, monkeypatch, capsys):
  package = tmp_path / "pkg"
  shutil.copytree(provenance.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
  monkeypatch.setattr(provenance, "PACKAGE_DIR", str(package))
  work = tmp_path / "w"
  _run(work)
  capsys.readouterr()
  _run(work)
  assert "Finished run found" in capsys.readouterr().out
  errors = package / "errors.py"
  errors.write_text(errors.read_text() + "\n# a comment changes no code\n")
  _run(work)
  assert "Finished run found" in capsys.readouterr().out
  errors.write_text(errors.read_text() + "\nANSWER = 42\n")
  _run(work)
  out = capsys.readouterr().out
  assert "changed since it ran: cnnlab source" in out and "Done in" in out
  assert any(n.startswith("w.stale-") for n in _names(tmp_path))


def test_only_an_edit_to_a_file_the_run_used_marks_it_stale(tmp_path, monkeypatch, capsys):
  package = tmp_path / "pkg"
  shutil.copytree(provenance.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
  monkeypatch.setattr(provenance, "PACKAGE_DIR", str(package))
  work = tmp_path / "w"
  _run(work)  # param_count builds lenet5 and alexnet by name: their files are recorded, the other models' are not
  code = rendering.read_json(str(work / "run_info.json"))["provenance"]["code"]
  assert "models/lenet.py" in code and "models/alexnet.py" in code and "models/segnets.py" not in code
  for unused in ("models/segnets.py", "report/build.py", "runner.py"):
    (package / unused).write_text((package / unused).read_text() + "\nANSWER = 42\n")
  capsys.readouterr()
  _run(work)
  assert "Finished run found" in capsys.readouterr().out
  lenet = package / "models" / "lenet.py"
  lenet.write_text(lenet.read_text() + "\nANSWER = 42\n")
  _run(work)
  assert "changed since it ran: cnnlab source (models/lenet.py)" in capsys.readouterr().out


def test_a_library_version_change_marks_cached_results_stale(tmp_path, monkeypatch, capsys):
  _run(tmp_path / "w")
  real = provenance.versions
  monkeypatch.setattr(provenance, "versions", lambda: {**real(), "flax": "0.0.0"})
  _run(tmp_path / "w")
  out = capsys.readouterr().out
  assert "changed since it ran: versions (flax " in out and "-> 0.0.0)" in out
  assert any(n.startswith("w.stale-") for n in _names(tmp_path))


def test_report_workers_die_with_the_report(tmp_path):
  """A worker of a report killed by SIGKILL (no cleanup runs) gets SIGTERM from the kernel and stops."""
  code = ("import sys, time; from cnnlab.report import workers\n"
          "worker = 'import time; from cnnlab.report import workers; workers.bind_to_parent(); time.sleep(120)'\n"
          "p = workers.spawn([sys.executable, '-c', worker], open(sys.argv[1], 'w'))\n"
          "print(p.pid, flush=True); time.sleep(120)")
  parent = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "log")], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
  child = int(parent.stdout.readline())
  time.sleep(3)  # the worker binds itself at start-up
  parent.send_signal(signal.SIGKILL)
  parent.wait()
  for _ in range(100):
    try:
      with open(f"/proc/{child}/stat") as f:
        if f.read().split(")")[-1].split()[0] in "ZX":
          break  # dead, waiting for a reaper
    except FileNotFoundError:
      break
    time.sleep(0.1)
  else:
    os.kill(child, signal.SIGKILL)
    pytest.fail("the worker outlived its report")
