"""A workdir never lies: one writer at a time, nothing created for a failed start, damaged files set aside.

Files the runner keeps in a workdir besides what the experiment writes:
  .lock            held (flock) by the one process writing here; holds its PID
  config.json      the config, written first
  provenance.json  the stamp (`cnnlab.provenance`) of the run in progress
  run_info.json    written last with results.json: wall and CPU time, backend, the stamp
"""

import contextlib
import dataclasses
import datetime
import errno
import json
import os
import shutil
from typing import Iterator

from cnnlab.errors import UserError

try:
  import fcntl
except ImportError:  # not on Windows: runs there are not locked
  fcntl = None

LOCK = ".lock"
BOOKKEEPING = (LOCK, "config.json", "provenance.json")  # what the runner writes before the experiment does


class WorkdirBusy(UserError):
  """Another process holds the workdir's lock."""


def _first_missing(path: str) -> str | None:
  """The outermost directory of `path` that does not exist yet (what makedirs will create), or None."""
  path, missing = os.path.abspath(path), None
  while not os.path.exists(path):
    missing, parent = path, os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing


def _remove(path: str, created: str) -> None:
  """Removes `path`, then its parents up to `created` while they are empty (another run may have started there)."""
  shutil.rmtree(path, ignore_errors=True)
  path, created = os.path.dirname(os.path.abspath(path)), os.path.abspath(created)
  while len(path) >= len(created):
    try:
      os.rmdir(path)
    except OSError:
      return
    path = os.path.dirname(path)


def _lock(path: str) -> int | None:
  """Takes `path`/.lock without waiting; a `WorkdirBusy` naming the holder's PID if another process has it."""
  if fcntl is None:
    return None
  fd = os.open(os.path.join(path, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
    os.close(fd)
    raise WorkdirBusy(f"workdir {path!r} is in use by process {holder} (it holds {os.path.join(path, LOCK)}); "
                      "wait for it to finish or use another --workdir") from None
  os.ftruncate(fd, 0)
  os.write(fd, f"{os.getpid()}\n".encode())
  return fd


@contextlib.contextmanager
def claim(path: str, exclusive: bool = True) -> Iterator[None]:
  """Creates `path` if needed and holds its lock for the body.

  A workdir it created is removed if the body fails before anything but the runner's bookkeeping was written
  there: a failed start leaves the disk as it was.
  """
  created = _first_missing(path)
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_test_{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    if created and os.path.isdir(path):
      _remove(path, created)
    if e.errno == errno.ENOSPC:  # not the user's mistake to fix in the command: run.py says so with exit 1
      raise
    raise UserError(f"cannot write to workdir {path!r}: {e.strerror}") from None
  fd, held = None, False
  try:
    fd = _lock(path) if exclusive else None
    held = True  # from here on, no other process writes here (a busy workdir is never removed)
    yield
  except BaseException:
    if created and held and set(os.listdir(path)) <= set(BOOKKEEPING):
      _remove(path, created)
    raise
  finally:
    if fd is not None:
      fcntl.flock(fd, fcntl.LOCK_UN)
      os.close(fd)


def _stamp_time() -> str:
  return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def read_record(path: str) -> dict | None:
  """A JSON file of the workdir as a dict; None if absent; a damaged one is moved aside (one line says where)."""
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
    if isinstance(value, dict):
      return value
    why = f"holds a {type(value).__name__}, not an object"
  except (ValueError, UnicodeDecodeError) as e:
    why = f"is damaged ({type(e).__name__})"
  except OSError as e:
    why = f"cannot be read ({e.strerror})"
  moved = f"{path}.damaged-{_stamp_time()}"
  os.replace(path, moved)
  print(f"cnnlab: {path} {why}; moved it to {moved}")
  return None


@dataclasses.dataclass
class Record:
  """What a workdir says about the run it holds."""
  config: dict | None    # config.json
  stamp: dict | None     # the stamp of run_info.json (finished run) or provenance.json (run started)
  results: dict | None   # results.json: the run finished
  info: dict | None      # run_info.json
  other_files: bool      # anything besides the runner's bookkeeping


def record(path: str) -> Record:
  """Reads a workdir's config, stamp and results (damaged files are moved aside and count as absent)."""
  config = read_record(os.path.join(path, "config.json"))
  info = read_record(os.path.join(path, "run_info.json"))
  started = read_record(os.path.join(path, "provenance.json"))
  results = read_record(os.path.join(path, "results.json"))
  stamp = (info or {}).get("provenance") or started
  other = any(n not in BOOKKEEPING and ".damaged-" not in n for n in os.listdir(path))
  return Record(config, stamp, results, info, other)


def retire(path: str, reason: str) -> str:
  """Moves everything in `path` but its lock to `<path>.stale-<time>` (measurements are never deleted)."""
  moved = f"{path.rstrip(os.sep)}.stale-{_stamp_time()}"
  n = 0
  while os.path.exists(moved):
    n += 1
    moved = f"{path.rstrip(os.sep)}.stale-{_stamp_time()}-{n}"
  os.makedirs(moved)
  for name in os.listdir(path):
    if name != LOCK:
      shutil.move(os.path.join(path, name), os.path.join(moved, name))
  print(f"cnnlab: {path}: {reason}; moved the old run to {moved}")
  return moved
