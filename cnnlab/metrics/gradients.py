"""Per-block gradient norms of a net whose blocks are one `nn.scan` named "blocks" (`cnnlab.models.deep`).

    norms = gradients.block_grad_norms(state, depth, x, y)   # (depth,): block 0 first

The gradient of the mean cross-entropy on (x, y) with respect to each block's weights (its kernel), taken in
training mode (BatchNorm on the batch's statistics, as the train step sees it).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax


@functools.lru_cache(maxsize=None)
def _block_grad_norms_fn(apply_fn, depth: int):
  """Jitted (params, batch_stats, x, y) -> gradient norm of each block's weights (kernel), block0 first."""

  def norms(params, batch_stats, x, y):
    def loss(p):
      if batch_stats:  # training-mode BatchNorm, as in train_step
        logits, _ = apply_fn({"params": p, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])
      else:
        logits = apply_fn({"params": p}, x, train=True)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    # Weights only: zero-initialised biases get gradients of another scale, which dominated the deepest blocks.
    g = jax.grad(loss)(params)["blocks"]["layer"]["kernel"]  # stacked over blocks: (depth, ...)
    return jnp.sqrt(jnp.sum(g.reshape(depth, -1) ** 2, axis=1))

  return jax.jit(norms)


def block_grad_norms(state, depth: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Per-block weight-gradient norms of the cross-entropy on (x, y) at `state`'s parameters."""
  return np.asarray(_block_grad_norms_fn(state.apply_fn, depth)(state.params, state.batch_stats or {}, x, y))
