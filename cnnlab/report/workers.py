"""Runs experiments as child `run.py` processes, a few at a time, that never outlive the report."""

import ctypes
import os
import signal
import subprocess
import sys
import time

from cnnlab.errors import Preempted
from cnnlab.training import preemption

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_ENV = "CNNLAB_REPORT_PID"  # set for a worker: the PID of the report it must not outlive


def bind_to_parent() -> None:
  """In a worker: have the kernel send SIGTERM (checkpoint and stop) when the report dies, even by SIGKILL.

  Called by the worker itself at start-up rather than in a preexec_fn, which would run Python between fork and
  exec in the report, a multithreaded (JAX) process.
  """
  parent = os.environ.pop(PARENT_ENV, "")
  if not parent.isdigit():
    return
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
  if os.getppid() != int(parent):  # the report died before prctl took effect
    os.kill(os.getpid(), signal.SIGTERM)


def spawn(cmd: list[str], log) -> subprocess.Popen:
  """Starts the worker `cmd`, logging to the open file `log`; it calls `bind_to_parent` to die with the report.

  Its own session: a Ctrl-C reaches the report only, which forwards exactly one SIGTERM.
  """
  return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                          env={**os.environ, PARENT_ENV: str(os.getpid())})


def _last_line(path: str) -> str:
  with open(path, errors="replace") as f:
    lines = [l.strip() for l in f.read().replace("\r", "\n").splitlines() if l.strip()]
  return lines[-1] if lines else ""


def run_all(commands: dict[str, tuple[list[str], str]], workers: int, workdir: str) -> dict[str, str]:
  """Runs {name: (command, log path)} `workers` at a time, in the given order; returns {name: status}.

  On SIGTERM/SIGINT every running experiment gets one SIGTERM (it checkpoints and stops) and the report
  stops with Preempted; rerunning resumes them.
  """
  queue, running, status = list(commands), {}, {}
  with preemption.catch_termination() as stop:
    try:
      while queue or running:
        while queue and len(running) < workers and not stop.requested:
          name = queue.pop(0)
          cmd, log_path = commands[name]
          log = open(log_path, "a")  # pylint: disable=consider-using-with
          print(f"report: running {name} (log: {log_path})")
          running[name] = (spawn(cmd, log), log)
        if stop.requested:
          for proc, _ in running.values():
            proc.send_signal(signal.SIGTERM)
          for proc, log in running.values():
            proc.wait()
            log.close()
          running.clear()
          raise Preempted(0, stop.signum, workdir)
        for name, (proc, log) in list(running.items()):
          if proc.poll() is not None:
            log.close()
            del running[name]
            status[name] = "ran" if proc.returncode == 0 else (
                f"failed (exit {proc.returncode}): {_last_line(log.name)}")
            print(f"report: {name} {status[name]}")
        time.sleep(0.2)
    finally:  # an unexpected error here must not leave experiments running
      for proc, log in running.values():
        proc.kill()
        log.close()
  return status
