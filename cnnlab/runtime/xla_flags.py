"""XLA:CPU flags for cnnlab's entry points: `apply()` before JAX starts its backend (run.py, the benchmark, tests).

JAX 0.10's XLA:CPU hands dots, elementwise ops and reductions to YNNPACK fusions by default; keeping YNNPACK for
convolutions only made cnnlab's train steps faster here (measurements: docs/performance.md). Numbers differ from
the default's by float rounding (another matmul kernel). The flag exists only in the XLA of some JAX releases and
an unknown flag aborts XLA, so it is set only for the releases listed; a flag already in $XLA_FLAGS wins, and
CNNLAB_XLA_DEFAULTS=off sets nothing. GPU and TPU compilations ignore it. Importing cnnlab never calls `apply()`:
a library user who wants the same numbers as run.py calls it before importing JAX.
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
