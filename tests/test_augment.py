"""Augmentation: determinism, identities, agreement with a numpy shift, per-step keys, resume replay."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab.data import augment
from cnnlab.errors import UserError


def _images(shape=(6, 8, 8, 3), seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _build(spec):
  """The pipeline jitted: as a train step runs it, and one compile instead of many eager ops."""
  return jax.jit(augment.build(spec))


def _np_shift(x, offsets):
  """x (*spatial, C) with content moved by `offsets`, vacated positions zero: numpy roll, then zero-fill."""
  out = np.asarray(x).copy()
  for axis, d in enumerate(offsets):
    out = np.roll(out, d, axis=axis)
    index = [slice(None)] * out.ndim
    index[axis] = slice(0, d) if d >= 0 else slice(out.shape[axis] + d, None)
    out[tuple(index)] = 0
  return out


def test_same_key_same_output_and_steps_differ():
  fn, x, rng = _build("crop:2,flip"), _images(), jax.random.key(0)
  a = fn(jax.random.fold_in(rng, 3), x)
  np.testing.assert_array_equal(a, fn(jax.random.fold_in(rng, 3), x))
  assert not np.array_equal(a, fn(jax.random.fold_in(rng, 4), x))


def test_tuple_and_string_specs_agree():
  x, key = _images(), jax.random.key(1)
  np.testing.assert_array_equal(_build(("crop:2", "flip"))(key, x), _build("crop:2, flip")(key, x))


def test_flip_twice_is_identity_and_flip_mirrors_or_keeps():
  x, key = _images(), jax.random.key(2)
  keys = jax.random.split(key, x.shape[0])
  once = jax.vmap(augment.flip)(keys, x)
  np.testing.assert_array_equal(jax.vmap(augment.flip)(keys, once), x)
  flipped = [not np.array_equal(o, xi) for o, xi in zip(np.asarray(once), np.asarray(x))]
  for o, xi, f in zip(np.asarray(once), np.asarray(x), flipped):
    np.testing.assert_array_equal(o, xi[:, ::-1] if f else xi)
  assert any(flipped) and not all(flipped)  # with this key: both outcomes occur among 6 examples


@pytest.mark.parametrize("spec", ["crop:0", "crop:0:reflect", "translate:0", "", "none", ()])
def test_zero_padding_crop_is_identity(spec):
  x = _images()
  np.testing.assert_array_equal(_build(spec)(jax.random.key(3), x), x)


@pytest.mark.parametrize("shape", [(5, 8, 8, 2), (5, 16, 3)])
def test_translate_moves_content_by_drawn_offset(shape):
  """Each example equals numpy's roll + zero-fill by the offset `draw_shift` gives for its key, and no other."""
  k, x, key = 2, _images(shape), jax.random.key(4)
  out = np.asarray(_build(f"translate:{k}")(key, x))
  spatial = len(shape) - 2
  # build() gives each op of an example its own key; with one op, that is split(example_key, 1)[0].
  drawn = jax.jit(jax.vmap(lambda ek: augment.draw_shift(jax.random.split(ek, 1)[0], spatial, k)))(
      jax.random.split(key, shape[0]))
  for i, offsets in enumerate(np.asarray(drawn).tolist()):
    matches = [c for c in itertools.product(range(-k, k + 1), repeat=spatial)
               if np.array_equal(out[i], _np_shift(x[i], c))]
    assert matches == [tuple(offsets)]


def test_zero_padded_crop_equals_translate():
  x, key = _images(), jax.random.key(5)
  np.testing.assert_array_equal(_build("crop:3")(key, x), _build("translate:3")(key, x))


def test_reflect_crop_draws_from_the_reflected_image():
  """Every reflect-padded crop is a window of numpy's reflect-padded example."""
  k, x, key = 2, _images((4, 6, 6, 1)), jax.random.key(6)
  out = np.asarray(_build(f"crop:{k}:reflect")(key, x))
  for o, xi in zip(out, np.asarray(x)):
    padded = np.pad(xi, [(k, k), (k, k), (0, 0)], mode="reflect")
    assert any(np.array_equal(o, padded[a:a + 6, b:b + 6]) for a in range(2 * k + 1) for b in range(2 * k + 1))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.uint8])
def test_shape_and_dtype_preserved_under_jit(dtype):
  x = (_images() * 40 + 100).astype(dtype)
  out = _build("crop:4:reflect,translate:1,flip")(jax.random.key(7), x)
  assert out.shape == x.shape and out.dtype == x.dtype


def test_jit_and_eager_agree():
  fn, x = augment.build("crop:2:reflect,flip"), _images((2, 8, 8, 1))
  np.testing.assert_array_equal(jax.jit(fn)(jax.random.key(7), x), fn(jax.random.key(7), x))


def test_signals_crop_and_translate():
  x = _images((4, 20, 2))
  out = _build("crop:3,translate:2")(jax.random.key(8), x)
  assert out.shape == x.shape


def test_resume_replays_the_same_batches():
  """The augmented batch of step t depends only on (rng, t), not on which steps ran before."""
  fn, x, rng = _build("crop:4,flip"), _images((4, 32, 32, 3)), jax.random.key(9)
  straight = [fn(jax.random.fold_in(rng, step), x) for step in range(5)]
  resumed = [fn(jax.random.fold_in(rng, step), x) for step in (3, 4)]
  np.testing.assert_array_equal(straight[3], resumed[0])
  np.testing.assert_array_equal(straight[4], resumed[1])


@pytest.mark.parametrize("spec", ["crop", "crop:x", "crop:-1", "flip:2", "rotate:10", "crop:4:mirror",
                                  "translate:2:reflect", ("crop:4", 3)])
def test_unknown_spec_is_a_user_error_at_build_time(spec):
  with pytest.raises(UserError, match="unknown augmentation"):
    augment.build(spec)


def test_flip_of_signals_is_a_user_error():
  with pytest.raises(UserError, match="flip"):
    augment.build("flip")(jax.random.key(0), _images((2, 16, 3)))


def test_reflect_padding_wider_than_the_input_is_a_user_error():
  with pytest.raises(UserError, match="reflect padding"):
    augment.build("crop:8:reflect")(jax.random.key(0), _images((2, 8, 8, 1)))
