"""Unpadded stride-1 convolution with its backward pass written as matmuls, where that is faster on XLA:CPU.

XLA:CPU computes the forward pass of a channels-last conv well, but the convs that autodiff makes of an
unpadded ("VALID") conv's backward pass ran slowly: the kernel gradient (a conv with the batch as the
contracted feature) always, the input gradient (a "full" conv of the output gradient with the flipped kernel,
padded by k - 1) when it has few channels or the output is one pixel. `conv` keeps XLA's forward conv and
computes
- the kernel gradient as one (C, M) x (M, O) matmul per kernel tap, M = batch x output pixels, over the
  input's shifted slice at that tap;
- the input gradient, where `col2im_input_grad` says so, as one (M, O) x (O, taps x C) matmul of the output
  gradient with every tap's kernel, the taps' shifted products then added one spatial dim at a time; else
  as autodiff's conv.
The same sums as autodiff's in another order: equal up to float rounding (`tests/test_kernels_conv.py`).
Padded ("SAME") convs keep autodiff: there the matmul forms lost as often as they won, and col2im was much
slower on larger maps.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from cnnlab.kernels import seeded
from cnnlab.ops import conv_ops

COL2IM_MAX_ELEMENTS = 1 << 21  # the (taps, M, C) products col2im adds up; beyond this (8 MB) it ran slower


def col2im_input_grad(x_shape, w_shape) -> bool:
  """Whether `conv`'s input gradient is computed by col2im (measured faster) rather than XLA's conv."""
  d = len(w_shape) - 2
  out = [s - k + 1 for s, k in zip(x_shape[1:-1], w_shape[:d])]
  products = x_shape[0] * np.prod(out) * np.prod(w_shape[:-1])
  return (x_shape[-1] < 8 or max(out) == 1) and products <= COL2IM_MAX_ELEMENTS


def _params(x, w, precision) -> tuple:
  dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, conv_ops.dimension_numbers(x.ndim - 2))
  return seeded.conv_params((1,) * (x.ndim - 2), "VALID", dimension_numbers=dn, precision=precision)


def _forward(x, w, precision):
  """XLA's conv; vmapped over seeds, one conv per seed (`seeded`), not a grouped conv."""
  return seeded.forward(_params(x, w, precision))(x, w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x: jax.Array, w: jax.Array, precision=None) -> jax.Array:
  """Unpadded, stride-1, undilated conv of x (N, *spatial, C) with w (*kernel, C, O)."""
  return _forward(x, w, precision)


def _conv_fwd(x, w, precision):
  return _forward(x, w, precision), (x, w)


def _conv_bwd(precision, res, g):
  x, w = res
  d = x.ndim - 2
  kernel, out = w.shape[:d], g.shape[1:-1]
  taps = [jnp.einsum("n...c,n...o->co", x[(slice(None), *(slice(k, k + n) for k, n in zip(tap, out)))], g,
                     precision=precision) for tap in np.ndindex(*kernel)]
  dw = jnp.stack(taps).reshape(w.shape)
  if not col2im_input_grad(x.shape, w.shape):
    return seeded.input_grad(_params(x, w, precision))(x, w, g), dw.astype(w.dtype)
  # (*kernel, N, *out, C): every tap's contribution to the input, added one spatial dim at a time.
  z = jnp.einsum("n...o,kco->kn...c", g, w.reshape(-1, *w.shape[-2:]), precision=precision)
  z = z.reshape(*kernel, *z.shape[1:])
  for i in reversed(range(d)):  # without kernel axis i, spatial dim i sits after i kernel axes, N, i spatial dims
    size = x.shape[1 + i]
    z = sum(jnp.pad(z[(slice(None),) * i + (k,)],
                    [(0, 0)] * (2 * i + 1) + [(k, size - out[i] - k)] + [(0, 0)] * (d - i))
            for k in range(kernel[i]))
  return z.astype(x.dtype), dw.astype(w.dtype)


conv.defvjp(_conv_fwd, _conv_bwd)
