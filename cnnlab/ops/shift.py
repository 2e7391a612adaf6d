"""Translations: shift ops, canvas placement, equivariance error, shifted accuracy and shift consistency.

Conventions: arrays are (B, *spatial, C); an offset is one integer per spatial dim, positive moves
content towards higher indices. 'circular' shifts wrap around; 'zero' shifts fill with zeros.
"""

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.training import inference
from cnnlab.data import Dataset
from cnnlab.errors import UserError

MODES = ("circular", "zero")


def shift(x, offsets: Sequence[int], mode: str = "circular"):
  """Translates the spatial dims of (B, *spatial, C) `x` by `offsets` (numpy or jax arrays)."""
  xp = jnp if isinstance(x, jax.Array) else np
  if len(offsets) != x.ndim - 2:
    raise UserError(f"need one offset per spatial dim ({x.ndim - 2}), got {tuple(offsets)}")
  if mode == "circular":
    return xp.roll(x, tuple(int(o) for o in offsets), axis=tuple(range(1, x.ndim - 1)))
  if mode != "zero":
    raise UserError(f"unknown shift mode {mode!r}; use one of {MODES}")
  for axis, o in enumerate(offsets, start=1):
    o, n = int(o), x.shape[axis]
    if o == 0:
      continue
    if abs(o) >= n:
      x = xp.zeros_like(x)
      continue
    pad = [(0, 0)] * x.ndim
    pad[axis] = (o, 0) if o > 0 else (0, -o)
    keep = [slice(None)] * x.ndim
    keep[axis] = slice(0, n - o) if o > 0 else slice(-o, n)
    x = xp.pad(x[tuple(keep)], pad)
  return x


def place_on_canvas(x: np.ndarray, size: int) -> np.ndarray:
  """Centres (N, h, w, C) images on a zero (N, size, size, C) canvas."""
  h, w = x.shape[1:3]
  if size < max(h, w):
    raise UserError(f"canvas {size} is smaller than the {h}x{w} images")
  top, left = (size - h) // 2, (size - w) // 2
  out = np.zeros((x.shape[0], size, size, x.shape[-1]), x.dtype)
  out[:, top:top + h, left:left + w] = x
  return out


def canvas_dataset(ds: Dataset, size: int) -> Dataset:
  """The same digits, centred on a larger zero canvas (room to translate them without cropping)."""
  return dataclasses.replace(ds, name=f"{ds.name}-canvas{size}", x_train=place_on_canvas(ds.x_train, size),
                             x_test=place_on_canvas(ds.x_test, size))


def relative_error(a, b) -> float:
  """‖a − b‖ / ‖b‖ over the whole batch."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def equivariance_error(f: Callable, x, offsets: Sequence[int], stride: int = 1, mode: str = "circular") -> float:
  """‖f(shift(x, s)) − shift(f(x), s / stride)‖ / ‖f(x)‖ for a map `f` of total `stride`.

  If an offset is not a multiple of the stride there is no integer output shift to compare with;
  the error is then the smallest over the output shifts floor(s/stride) and ceil(s/stride) per dim.
  """
  fx = np.asarray(f(x))
  fsx = np.asarray(f(shift(x, offsets, mode)))
  candidates = [sorted({o // stride, -(-o // stride)}) for o in offsets]
  return min(relative_error(fsx, shift(fx, out, mode)) for out in np.array(np.meshgrid(*candidates)).reshape(
      len(offsets), -1).T)


def directions(s: int, dims: int) -> list[tuple[int, ...]]:
  """The 2·dims axis-aligned offsets of length `s` (one offset of 0 when s == 0)."""
  if s == 0:
    return [(0,) * dims]
  out = []
  for d in range(dims):
    for sign in (1, -1):
      o = [0] * dims
      o[d] = sign * s
      out.append(tuple(o))
  return out


predict = inference.predict  # predicted classes of a TrainState (kept here for the shift helpers)


def shifted_accuracy(state, x: np.ndarray, y: np.ndarray, s: int, mode: str = "zero",
                     batch_size: int = 500) -> float:
  """Test accuracy averaged over the axis-aligned translations of the test set by `s` positions."""
  dims = x.ndim - 2
  return float(np.mean([np.mean(predict(state, shift(x, o, mode), batch_size) == y) for o in directions(s, dims)]))


def random_offsets(n: int, max_shift: int, dims: int, seed: int) -> np.ndarray:
  """(n, dims) integer offsets uniform in [-max_shift, max_shift]."""
  return np.random.default_rng(seed).integers(-max_shift, max_shift + 1, size=(n, dims))


def shift_each(x: np.ndarray, offsets: np.ndarray, mode: str = "zero") -> np.ndarray:
  """Shifts example i of `x` by offsets[i]."""
  return np.concatenate([shift(x[i:i + 1], o, mode) for i, o in enumerate(offsets)])


def consistency(state, x: np.ndarray, max_shift: int, seed: int, mode: str = "zero", batch_size: int = 500) -> float:
  """Zhang (2019): how often the predicted class agrees between two random translations of each input."""
  dims = x.ndim - 2
  a = predict(state, shift_each(x, random_offsets(len(x), max_shift, dims, seed), mode), batch_size)
  b = predict(state, shift_each(x, random_offsets(len(x), max_shift, dims, seed + 1), mode), batch_size)
  return float(np.mean(a == b))


def robustness(state, x: np.ndarray, y: np.ndarray, max_shift: int, consistency_shift: int, seed: int,
               batch_size: int = 500) -> dict:
  """A trained 2-D classifier under translation: accuracy at each shift s = 0..max_shift (`acc_shift<s>`: per
  example, the fraction of its 4 axis-aligned s px translations, zero fill, classified right; averaged), the
  accuracy it keeps (`kept`: shifts 1..max_shift minus shift 0, per example, averaged; `kept_se`: its standard
  error over examples) and `consistency` under random shifts up to `consistency_shift` (seeded by `seed`)."""
  right = {s: np.mean([predict(state, shift(x, o, "zero"), batch_size) == y for o in directions(s, 2)], axis=0)
           for s in range(max_shift + 1)}
  kept = np.mean([right[s] for s in range(1, max_shift + 1)], axis=0) - right[0]  # per example
  return {**{f"acc_shift{s}": float(r.mean()) for s, r in right.items()}, "kept": float(kept.mean()),
          "kept_se": float(kept.std(ddof=1) / np.sqrt(len(kept))),
          "consistency": consistency(state, x, consistency_shift, seed=seed, batch_size=batch_size)}
