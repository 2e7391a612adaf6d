"""Per-example data augmentation drawn from a PRNG key: random crop with padding, horizontal flip, translation.

`build("crop:4,flip")` (or `build(("crop:4", "flip"))`) returns `fn(key, x) -> x` for a batch x of shape
(B, *spatial, C); example i is augmented with key `jax.random.split(key, B)[i]`. Pass
`jax.random.fold_in(rng, step)` as the key so that a resumed run replays the same augmented batches.

Ops, each applied in the order given:
  crop:K          pad K zeros on both sides of every spatial axis, crop a random window of the original size
  crop:K:reflect  the same with reflection padding (K smaller than every spatial size)
  translate:K     shift the content by a random offset in [-K, K] per spatial axis, zero fill
  flip            mirror left-right with probability 1/2 (images (B, H, W, C) only)
Crop and translate act on every spatial axis, so they serve signals (B, L, C) too. `crop:K` with zero padding
is the same transformation as `translate:K` (a window at offset K - d of the padded input is the input shifted
by d); both names stay because papers use both.
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from cnnlab.errors import UserError

Augment = Callable[[jax.Array, jax.Array], jax.Array]
SPELLINGS = ("crop:K", "crop:K:reflect", "translate:K", "flip")


def draw_shift(key: jax.Array, spatial: int, max_shift: int) -> jax.Array:
  """The offsets (one per spatial axis, each uniform in [-max_shift, max_shift]) that `translate` draws from key."""
  return jax.random.randint(key, (spatial,), -max_shift, max_shift + 1)


def shift(x: jax.Array, offsets: jax.Array, max_shift: int, mode: str = "constant") -> jax.Array:
  """Example x (*spatial, C) with its content moved by `offsets` (|offset| <= max_shift), filled by `mode` padding."""
  spatial = x.ndim - 1
  if mode == "reflect" and any(n <= max_shift for n in x.shape[:-1]):
    raise UserError(f"reflect padding of {max_shift} needs every spatial size above it, got {x.shape[:-1]}")
  padded = jnp.pad(x, [(max_shift, max_shift)] * spatial + [(0, 0)], mode=mode)
  starts = [max_shift - offsets[i] for i in range(spatial)] + [0]
  return jax.lax.dynamic_slice(padded, starts, x.shape)


def translate(key: jax.Array, x: jax.Array, max_shift: int, mode: str = "constant") -> jax.Array:
  """Example x (*spatial, C) shifted by `draw_shift(key, ...)`; with mode 'constant' this is also crop-with-padding."""
  return shift(x, draw_shift(key, x.ndim - 1, max_shift), max_shift, mode)


def flip(key: jax.Array, x: jax.Array) -> jax.Array:
  """Image x (H, W, C) mirrored left-right with probability 1/2."""
  if x.ndim != 3:
    raise UserError(f"augmentation 'flip' needs images (B, H, W, C), got examples of shape {x.shape}")
  # A select, not lax.cond: under vmap a cond runs both branches anyway.
  return jnp.where(jax.random.bernoulli(key), x[:, ::-1], x)


def _parse(op: str, spec: object) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """One op spelling -> per-example fn(key, x); bad spellings raise a one-line UserError."""
  op = op.strip() if isinstance(op, str) else op
  bad = UserError(f"unknown augmentation {op!r} in {spec!r}; use a comma-separated list of {', '.join(SPELLINGS)}")
  if not isinstance(op, str):
    raise bad
  name, *args = op.split(":")
  if name == "flip" and not args:
    return flip
  if name in ("crop", "translate") and args:
    if not args[0].isdigit() or len(args) > 2 or (len(args) == 2 and (name, args[1]) != ("crop", "reflect")):
      raise bad
    k, mode = int(args[0]), ("reflect" if args[1:] == ["reflect"] else "constant")
    return lambda key, x: translate(key, x, k, mode)
  raise bad


def build(spec: str | Sequence[str] | None) -> Augment:
  """fn(key, x_batch) -> x_batch applying the ops of `spec` ("crop:4,flip" or ("crop:4", "flip")) per example."""
  ops = spec.split(",") if isinstance(spec, str) else list(spec or ())
  ops = [op for op in ops if not isinstance(op, str) or op.strip() not in ("", "none")]
  fns = [_parse(op, spec) for op in ops]

  def one(key, x):
    for k, fn in zip(jax.random.split(key, len(fns)), fns):
      x = fn(k, x)
    return x

  def apply(key: jax.Array, x: jax.Array) -> jax.Array:
    if not fns:
      return x
    if x.ndim < 3:
      raise UserError(f"augmentation expects a batch (B, *spatial, C), got shape {x.shape}")
    return jax.vmap(one)(jax.random.split(key, x.shape[0]), x)

  return apply
