"""Errors a user can cause and fix; `run.py` prints them as one line and exits with code 2."""


class UserError(Exception):
  """Bad input from the user: unknown name, bad config value, impossible geometry, missing data."""


class TrainingDiverged(RuntimeError):
  """The loss became NaN or inf; the last good checkpoint is kept."""
