"""Analytic receptive fields against gradient supports and known values."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cnnlab.ops import analysis
from cnnlab.ops import receptive_field as rfl
from cnnlab.errors import UserError
from cnnlab.ops.receptive_field import Layer


def test_known_networks():
  alexnet = [Layer(11, 4), Layer(3, 2, kind="pool"), Layer(5, padding=2), Layer(3, 2, kind="pool"),
             Layer(3, padding=1), Layer(3, padding=1), Layer(3, padding=1), Layer(3, 2, kind="pool")]
  assert [r["rf"] for r in rfl.analytic(alexnet)] == [11, 19, 51, 67, 99, 131, 163, 195]
  assert rfl.analytic(alexnet)[-1]["jump"] == 32
  assert rfl.analytic([Layer(3)] * 5)[-1]["rf"] == 11
  assert rfl.analytic([Layer(3, dilation=2 ** i) for i in range(5)])[-1]["rf"] == 2 ** 6 - 1


layer = st.builds(Layer, kernel=st.integers(1, 4), stride=st.integers(1, 2), dilation=st.integers(1, 2),
                  padding=st.integers(0, 1))


@settings(max_examples=15, deadline=None)
@given(st.lists(layer, min_size=1, max_size=3))
def test_gradient_support_is_the_analytic_field(layers):
  last = rfl.analytic(layers)[-1]
  m = rfl.empirical(layers, size=last["rf"] + 3 * last["jump"] + 2)
  assert m["agree"], m


def test_unit_field_positions_with_padding():
  layers = [Layer(3, padding=1), Layer(2, 2, kind="pool"), Layer(3, padding=1)]
  assert rfl.unit_field(layers, 0) == (-3, 4)  # Runs into the padding.
  assert rfl.unit_field(layers, 3) == (3, 10)
  grad = rfl.gradient_map(rfl.linear_stack(layers), jnp.ones((1, 16, 16, 1)), (3, 0))
  assert rfl.nonzero_extent(grad) == [(3, 10), (0, 4)]


def test_dilated_stack_has_the_same_parameters():
  plain, dilated = rfl.ConvStack(8, 3, (1, 1, 1)), rfl.ConvStack(8, 3, (1, 2, 4))
  counts = [analysis.count_params(analysis.abstract_variables(s, (1, 32, 32, 8))["params"]) for s in (plain, dilated)]
  assert counts[0] == counts[1] == 3 * (9 * 8 * 8 + 8)
  assert [rfl.analytic(s.layers())[-1]["rf"] for s in (plain, dilated)] == [7, 15]


def test_mass_measures():
  erf = np.zeros((9, 9))
  erf[4, 4] = 1.0
  assert rfl.mass_area(erf) == 1 and rfl.mass_radius(erf) == 0.0
  erf[3:6, 3:6] = 1.0
  assert rfl.mass_area(erf, 0.9) == 9 and rfl.mass_radius(erf, 1.0) == pytest.approx(np.sqrt(2))
  with pytest.raises(UserError):
    rfl.analytic([Layer(3, kind="attention")])


def test_erf_change_is_a_paired_comparison_of_each_seed_with_its_own_init():
  from experiments import receptive_field  # pylint: disable=g-import-not-at-top
  seeds = lambda pairs: [{"untrained": {"mass_area": u}, "trained": {"mass_area": t}} for u, t in pairs]  # noqa
  # Inits spread widely, but every seed's training adds 10-12 px: paired, that is a clear growth.
  assert receptive_field.erf_change(seeds([(100, 110), (150, 161), (200, 212), (130, 141)])).startswith(
      "training grew")
  assert receptive_field.erf_change(seeds([(100, 90), (150, 139), (200, 188)])).startswith("training shrank")
  assert "did not detectably change" in receptive_field.erf_change(seeds([(100, 110), (150, 140), (200, 201)]))


def test_seed_settings_are_checked():
  from experiments import receptive_field  # pylint: disable=g-import-not-at-top
  config = receptive_field.get_config(quick=True)
  config.seed_base = -1
  with pytest.raises(UserError, match="seed_base"):
    receptive_field.validate_config(config)
