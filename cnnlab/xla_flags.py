"""XLA:CPU flags cnnlab sets before JAX starts its backend (imported by `cnnlab/__init__.py`).

JAX 0.10's XLA:CPU hands dots, elementwise ops and reductions to YNNPACK fusions by default. Here those
ran slower than XLA's own dot and loop emitters; keeping YNNPACK for convolutions only made the train
steps faster (same run, 2 CPU cores, 2026-11-28, steps/s default -> with the flag): MLP 784-1000-1000-10
58 -> 77, LeNet-like CNN 88 -> 133, weight_sharing CNN 191 -> 263, weight_sharing MLP 434 -> 771, DIP skip
net 43 -> 51; the LCN, segmentation net and AlexNet unchanged. The numbers differ from the default's by
float rounding (another matmul kernel). The flag exists only in the XLA of some JAX releases and an
unknown flag aborts XLA, so it is set only for the releases listed; a flag already in $XLA_FLAGS wins, and
CNNLAB_XLA_DEFAULTS=off sets nothing. It is an XLA:CPU flag: GPU and TPU compilations ignore it.
"""

import os
from importlib import metadata

ENV_VAR = "CNNLAB_XLA_DEFAULTS"  # "off" leaves $XLA_FLAGS as it is
FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}
RELEASES = ("0.10.",)  # jaxlib versions whose XLA:CPU knows these flags (checked: 0.10.2)


def apply() -> list[str]:
  """Appends FLAGS to $XLA_FLAGS where this jaxlib knows them and the user set none; returns what it added."""
  if os.environ.get(ENV_VAR, "").strip().lower() in ("off", "0", "false", "no"):
    return []
  try:
    version = metadata.version("jaxlib")
  except metadata.PackageNotFoundError:
    return []
  if not version.startswith(RELEASES):
    return []
  current = os.environ.get("XLA_FLAGS", "")
  added = [f"--{k}={v}" for k, v in FLAGS.items() if f"--{k}" not in current]
  if added:
    os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
  return added
