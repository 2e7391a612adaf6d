"""SIGTERM / SIGINT during training: finish the current step, checkpoint, exit with a resume hint.

Cloud TPU and most schedulers send SIGTERM before preempting a host. `run.py` installs the handler
for the whole run (`install`), so a signal during compilation, evaluation or between trainings is
honoured at the next step boundary too; library users get it around `train.fit` alone. A second
signal restores the default behaviour, so a run that does not stop can still be killed.
"""

import contextlib
import signal
import threading

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """Set by the first SIGTERM/SIGINT; `signum` says which."""

  def __init__(self):
    self.signum: int | None = None
    self.previous: dict | None = None  # handlers to restore; None while not installed

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def _handler(self, signum, frame):
    del frame
    self.signum = signum
    for s, h in (self.previous or {}).items():  # a second signal acts as usual
      signal.signal(s, h)


_REQUEST = StopRequest()


def install() -> StopRequest:
  """Routes SIGTERM/SIGINT to the process-wide stop request until `uninstall` (main thread only)."""
  if _REQUEST.previous is None and threading.current_thread() is threading.main_thread():
    _REQUEST.previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
      signal.signal(s, _REQUEST._handler)  # pylint: disable=protected-access
  return _REQUEST


def uninstall() -> None:
  if _REQUEST.previous is not None:
    for s, h in _REQUEST.previous.items():
      signal.signal(s, h)
  _REQUEST.previous, _REQUEST.signum = None, None


@contextlib.contextmanager
def catch_termination():
  """Yields the stop request that the training loop polls once per step."""
  if _REQUEST.previous is not None:  # installed for the whole run by run.py
    yield _REQUEST
    return
  install()
  try:
    yield _REQUEST
  finally:
    uninstall()
