"""SIGTERM / SIGINT during training: finish the current step, checkpoint, exit with a resume hint.

Cloud TPU and most schedulers send SIGTERM before preempting a host. A second signal restores the
default behaviour, so a user can still hard-kill a run that does not stop.
"""

import contextlib
import signal
import threading


class StopRequest:
  """Set by the first SIGTERM/SIGINT; `signum` says which."""

  def __init__(self):
    self.signum: int | None = None

  @property
  def requested(self) -> bool:
    return self.signum is not None


@contextlib.contextmanager
def catch_termination():
  """Yields a `StopRequest` that the training loop polls once per step."""
  request = StopRequest()
  if threading.current_thread() is not threading.main_thread():  # signals are main-thread only
    yield request
    return
  previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

  def handler(signum, frame):
    del frame
    request.signum = signum
    for s, h in previous.items():  # a second signal acts as usual
      signal.signal(s, h)

  for s in previous:
    signal.signal(s, handler)
  try:
    yield request
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
