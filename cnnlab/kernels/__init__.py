"""CPU speed kernels: each computes what a plain flax / lax op computes, faster on XLA:CPU.

Models declare their ops as fields whose defaults are the plain ops (`conv: ModuleDef = nn.Conv`, ...);
`specialise(model, choice)` swaps in these kernels once per run, outside the model:

    model = kernels.specialise(models.create("cnn"), config.train.kernels)  # "auto" | "xla"

Each kernel has a test of equality (values and gradients) with its plain op. "auto" uses them on the CPU
backend only, where they were measured; on GPU/TPU the plain ops run as XLA compiles them.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import optax

from cnnlab.errors import UserError
from cnnlab.kernels import conv, local, lrn, norms, padding, pooling, scan, transpose
from cnnlab.models import layers

CHOICES = ("auto", "xla")  # auto: these kernels where they are faster (the CPU backend); xla: plain ops everywhere

# Plain op -> its CPU kernel, for any op field of a model.
FAST: tuple[tuple[Any, Any], ...] = (
    (nn.Conv, conv.Conv),
    (jax.lax.conv_general_dilated, conv.conv_general_dilated),
    (nn.ConvLocal, local.ConvLocal),
    (nn.ConvTranspose, transpose.ConvTranspose),
    (layers.pool, pooling.pool),
    (layers.lrn, lrn.lrn),
    (layers.reflect_pad, padding.reflect_pad),
)
# Fields whose plain op has another kernel: a conv inside `nn.scan` (the deep nets' blocks).
FAST_BY_FIELD: dict[str, tuple[tuple[Any, Any], ...]] = {
    "block_conv": ((nn.Conv, scan.ScanConv),),
}
_NOT_OPS = ("parent", "name")


def check(choice: str) -> None:
  """A one-line `UserError` unless `choice` is one of CHOICES."""
  if choice not in CHOICES:
    raise UserError(f"unknown kernels {choice!r}; use one of {CHOICES}")


def _use_kernels(choice: str, backend: str | None) -> bool:
  check(choice)
  if choice == "xla":
    return False
  return (jax.default_backend() if backend is None else backend) == "cpu"


def _fast_op(field: str, value: Any) -> Any:
  """The kernel for `value` held in `field`, or None."""
  for plain, fast in FAST_BY_FIELD.get(field, ()) + FAST:
    if value is plain:
      return fast
  return None


def specialise(model: nn.Module, choice: str, backend: str | None = None) -> nn.Module:
  """`model` with each plain op field that has a CPU kernel set to that kernel ("auto" on CPU); else `model`.

  `backend` defaults to `jax.default_backend()`. Submodule fields are specialised too. Idempotent.
  """
  if not _use_kernels(choice, backend):
    return model
  updates = {}
  for f in dataclasses.fields(model):
    if f.name in _NOT_OPS:
      continue
    value = getattr(model, f.name)
    if isinstance(value, nn.Module):
      new = specialise(value, choice, "cpu")
    else:
      new = _fast_op(f.name, value)
    if new is not None and new is not value:
      updates[f.name] = new
  return model.clone(**updates) if updates else model


def tree_norm(choice: str, backend: str | None = None) -> Callable[[Any], Any]:
  """The global L2 norm of a tree of arrays: `norms.global_norm` ("auto" on CPU), else `optax.tree.norm`."""
  return norms.global_norm if _use_kernels(choice, backend) else optax.tree.norm
