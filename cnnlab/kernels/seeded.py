"""Convolutions whose weights carry a seed axis under `jax.vmap`: one conv per seed, not one grouped conv.

A seeded training (`training.seeds`) vmaps the train step over seeds, so every conv sees per-seed weights. lax's
batching rule turns that into a single conv with `feature_group_count` (or, for the kernel gradient,
`batch_group_count`) = seeds, which XLA:CPU runs several times slower than the same convs one seed at a time
(weight_sharing's 8 -> 16 channel conv: 157 ms grouped vs 24 ms as 10 convs, forward + backward; see
benchmarks/seeds.py). `unrolled(fn)` gives `fn` a batching rule that writes out one call per batch element, and
`lax_conv` is `lax.conv_general_dilated` with a custom VJP whose forward and backward are each `unrolled` (custom
batching rules do not compose with reverse-mode autodiff, so the VJP is spelt out: the same ops autodiff emits).
Without vmap nothing changes: each seed computes exactly what a single-seed run computes.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp


def unrolled(fn: Callable) -> Callable:
  """`fn` of arrays, batched under vmap as one call of `fn` per batch element (a Python loop in the program)."""
  f = jax.custom_batching.custom_vmap(fn)

  @f.def_vmap
  def rule(axis_size, in_batched, *args):
    outs = [fn(*(a[i] if batched else a for a, batched in zip(args, in_batched))) for i in range(axis_size)]
    stacked = jax.tree.map(lambda *o: jnp.stack(o), *outs)
    return stacked, jax.tree.map(lambda _: True, stacked)

  return f


def _plain(params: tuple) -> Callable:
  return lambda lhs, rhs: jax.lax.conv_general_dilated(lhs, rhs, **dict(params))


@functools.lru_cache(maxsize=None)
def _forward(params: tuple) -> Callable:
  return unrolled(_plain(params))


@functools.lru_cache(maxsize=None)
def _backward(params: tuple) -> Callable:
  return unrolled(lambda lhs, rhs, g: jax.vjp(_plain(params), lhs, rhs)[1](g))


@functools.lru_cache(maxsize=None)
def _input_backward(params: tuple) -> Callable:
  return unrolled(lambda lhs, rhs, g: jax.vjp(lambda x: _plain(params)(x, rhs), lhs)[1](g)[0])


def forward(params: tuple) -> Callable:
  """(lhs, rhs) -> `lax.conv_general_dilated(lhs, rhs, **dict(params))`, one conv per seed under vmap."""
  return _forward(params)


def input_grad(params: tuple) -> Callable:
  """(lhs, rhs, g) -> the conv's gradient w.r.t. lhs (autodiff's conv), one per seed under vmap."""
  return _input_backward(params)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(lhs, rhs, params):
  return _forward(params)(lhs, rhs)


def _conv_fwd(lhs, rhs, params):
  return _forward(params)(lhs, rhs), (lhs, rhs)


def _conv_bwd(params, res, g):
  return _backward(params)(*res, g)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_params(window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                feature_group_count=1, batch_group_count=1, precision=None, preferred_element_type=None) -> tuple:
  """`lax.conv_general_dilated`'s keyword arguments as a hashable tuple (the static part of `lax_conv`)."""
  listed = lambda v: None if v is None else tuple(tuple(p) if isinstance(p, (list, tuple)) else p for p in v)
  return (("window_strides", tuple(window_strides)),
          ("padding", padding if isinstance(padding, str) else listed(padding)),
          ("lhs_dilation", listed(lhs_dilation)), ("rhs_dilation", listed(rhs_dilation)),
          ("dimension_numbers", dimension_numbers), ("feature_group_count", feature_group_count),
          ("batch_group_count", batch_group_count), ("precision", precision),
          ("preferred_element_type", preferred_element_type))


def lax_conv(lhs, rhs, *args, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated(lhs, rhs, *args, **kwargs)` (same values and gradients), unrolled over seeds."""
  return _conv(lhs, rhs, conv_params(*args, **kwargs))


@functools.lru_cache(maxsize=None)
def per_seed(fn: Callable) -> Callable:
  """(lhs, rhs) -> fn(lhs, rhs), differentiable, with forward and backward each `unrolled` under vmap.

  `fn` must be hashable and fixed (a module-level function or a cached partial): it keys the cache.
  """
  fwd_ = unrolled(fn)
  bwd_ = unrolled(lambda lhs, rhs, g: jax.vjp(fn, lhs, rhs)[1](g))

  @jax.custom_vjp
  def f(lhs, rhs):
    return fwd_(lhs, rhs)

  f.defvjp(lambda lhs, rhs: (fwd_(lhs, rhs), (lhs, rhs)), lambda res, g: bwd_(*res, g))
  return f
