"""Training metrics to metrics.jsonl (one JSON object per logged step) and TensorBoard event files."""

import json
import math
import os
import sys

from cnnlab.training import parallel


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without torch when torch is installed but not yet imported.

  tensorboardX imports torch (~3.5 s here) only to accept torch tensors; cnnlab logs Python floats, and every
  experiment process would pay that import.
  """
  if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX handles
    try:
      import tensorboardX  # pylint: disable=g-import-not-at-top,unused-import
    finally:
      del sys.modules["torch"]
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  return SummaryWriter


class MetricWriter:
  """Appends `{"step": s, **scalars}` lines; on resume, drops lines past the restored step."""

  def __init__(self, workdir: str, resume_step: int = 0, tensorboard: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._file = self._tb = None
    if not parallel.is_chief():  # one writer per run: process 0
      return
    if os.path.exists(self.path):
      with open(self.path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
      with open(self.path, "w") as f:
        f.writelines(kept)
    self._file = open(self.path, "a")
    self._tb = None
    if tensorboard:
      self._tb = _summary_writer_class()(os.path.join(workdir, "tensorboard"), flush_secs=30)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if self._file is None:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._file.write(json.dumps({"step": step, **{k: (v if math.isfinite(v) else str(v))
                                                  for k, v in scalars.items()}}) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, step)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]
