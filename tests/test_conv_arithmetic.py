"""Output-size arithmetic against the shapes real `lax` / flax convolutions produce."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax import lax

from cnnlab.ops import conv_arithmetic as ca
from cnnlab.errors import UserError

DN = ("NWC", "WIO", "NWC")


def lax_out(i, k, s, pads, d):
  x = jax.ShapeDtypeStruct((1, i, 1), np.float32)
  w = jax.ShapeDtypeStruct((k, 1, 1), np.float32)
  f = lambda x, w: lax.conv_general_dilated(x, w, (s,), pads, rhs_dilation=(d,), dimension_numbers=DN)
  return jax.eval_shape(f, x, w).shape[1]


def test_seed_examples():
  assert ca.conv_output_size(18, 3) == 16
  assert ca.conv_output_size(18, 3, p=1) == 18
  assert ca.conv_output_size(28, 5, p="valid") == 24
  assert ca.conv_output_size(28, 5, p="same") == 28
  assert ca.conv_output_size(28, 5, s=2, p="same") == 14
  assert ca.conv_output_size(227, 11, s=4) == 55
  assert ca.effective_kernel_size(3, 2) == 5


geometry = st.tuples(st.integers(1, 20), st.integers(1, 6), st.integers(1, 4), st.integers(0, 3),
                     st.integers(0, 3), st.integers(1, 3))


@settings(max_examples=50, deadline=None)
@given(geometry)
def test_matches_lax_shapes(g):
  i, k, s, lo, hi, d = g
  if i + lo + hi < ca.effective_kernel_size(k, d):
    with pytest.raises(ca.GeometryError):
      ca.conv_output_size(i, k, s, (lo, hi), d)
    return
  assert ca.conv_output_size(i, k, s, (lo, hi), d) == lax_out(i, k, s, [(lo, hi)], d)


@settings(max_examples=50, deadline=None)
@given(geometry)
def test_named_paddings(g):
  i, k, s, _, _, d = g
  kk = ca.effective_kernel_size(k, d)
  for mode in ("SAME", "VALID"):
    if mode == "VALID" and i < kk:
      continue
    assert [ca.conv_padding(mode, i, k, s, d)] == lax.padtype_to_pads((i,), (kk,), (s,), mode)
    assert ca.conv_output_size(i, k, s, mode, d) == lax_out(i, k, s, mode, d)
  assert ca.conv_output_size(i, k, s, "same", d) == -(-i // s)
  assert ca.conv_output_size(i, k, 1, "full", d) == i + kk - 1
  if kk % 2:
    assert ca.conv_output_size(i, k, 1, "half", d) == i


@settings(max_examples=50, deadline=None)
@given(geometry)
def test_transpose_inverts_conv_shape(g):
  i, k, s, p, _, d = g
  if i + 2 * p < ca.effective_kernel_size(k, d):
    return
  o = ca.conv_output_size(i, k, s, p, d)
  a = ca.transpose_extra(i, k, s, p, d)
  assert ca.conv_transpose_output_size(o, k, s, p, a, d) == i
  # The transpose of the conv's linear map takes the output shape back to the input shape.
  w = np.ones((k, 1, 1), np.float32)
  conv = lambda x: lax.conv_general_dilated(x, w, (s,), [(p, p)], rhs_dilation=(d,), dimension_numbers=DN)
  (back,) = jax.linear_transpose(conv, jax.ShapeDtypeStruct((1, i, 1), np.float32))(np.ones((1, o, 1), np.float32))
  assert back.shape[1] == i


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 8), st.integers(1, 5), st.integers(1, 3), st.integers(0, 2), st.integers(0, 2),
       st.integers(1, 2))
def test_transpose_matches_flax(i, k, s, p, a, d):
  if a >= s or s * (i - 1) + a + ca.effective_kernel_size(k, d) - 2 * p < 1:
    return
  layer = nn.ConvTranspose(1, (k,), strides=(s,), padding=[ca.conv_transpose_padding(k, p, a, d)],
                           kernel_dilation=(d,))
  x = jax.ShapeDtypeStruct((1, i, 1), np.float32)
  out = jax.eval_shape(lambda x: layer.init_with_output(jax.random.key(0), x)[0], x)
  assert out.shape[1] == ca.conv_transpose_output_size(i, k, s, p, a, d)


def test_errors_are_value_and_user_errors():
  with pytest.raises(ValueError, match="larger than the padded input"):
    ca.conv_output_size(4, 7)
  with pytest.raises(UserError):
    ca.conv_output_size(4, 3, d=2, p=0)
  for bad in [dict(i=0, k=1), dict(i=3, k=1, s=0), dict(i=3, k=1, p=-1), dict(i=3, k=1, p="bogus")]:
    with pytest.raises(ca.GeometryError):
      ca.conv_output_size(**bad)
  with pytest.raises(ca.GeometryError, match="output padding"):
    ca.conv_transpose_output_size(3, 3, s=2, a=2)
  assert ca.conv_output_shape((18, 9), (3, 3), p=(1, "valid")) == (18, 7)
