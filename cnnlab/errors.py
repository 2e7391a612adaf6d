"""Errors a user can cause and fix; `run.py` prints them as one line and exits with code 2."""


class UserError(Exception):
  """Bad input from the user: unknown name, bad config value, impossible geometry, missing data."""


class TrainingDiverged(RuntimeError):
  """The loss became NaN or inf; the last good checkpoint is kept."""


class Preempted(Exception):
  """Training stopped on SIGTERM/SIGINT after saving a checkpoint at `step`; rerunning resumes."""

  def __init__(self, step: int, signum: int, workdir: str):
    super().__init__(f"stopped by signal {signum} at step {step}; checkpoint saved in {workdir}")
    self.step, self.signum, self.workdir = step, signum, workdir
