"""`global_norm`: `optax.tree.norm` with the big leaves' squares summed as dots."""

import jax
import jax.numpy as jnp

DOT_MIN_SIZE = 1 << 16  # leaves of at least this many elements are squared and summed as one dot


def global_norm(tree) -> jax.Array:
  """The L2 norm of all leaves together, as `optax.tree.norm` up to float rounding.

  Big leaves are squared and summed as one dot each: as a reduction, XLA:CPU materialised their squares
  (shared with Adam's second moment) and reduced them slowly. Dots for small leaves too made the conv nets'
  steps slower.
  """
  return jnp.sqrt(sum(jnp.vdot(g, g) if g.size >= DOT_MIN_SIZE else jnp.sum(jnp.square(g))
                      for g in jax.tree.leaves(tree)))
