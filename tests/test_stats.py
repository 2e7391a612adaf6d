"""cnnlab.report.stats against scipy's own tests and hand-computed cases."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from cnnlab.report import stats


def test_paired_effect_matches_scipy_ttest_rel():
  rng = np.random.default_rng(0)
  a = rng.normal(0.9, 0.02, 10)
  b = a - rng.normal(0.01, 0.01, 10)
  e = stats.paired(a, b)
  ref = sps.ttest_rel(a, b, alternative="greater")
  assert e.p_greater() == pytest.approx(ref.pvalue, rel=1e-9)
  lo, hi = e.interval(0.05)
  ci = sps.ttest_rel(a, b).confidence_interval(0.95)
  assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_unpaired_effect_matches_welch():
  a, b = [0.91, 0.93, 0.92, 0.95], [0.90, 0.88, 0.91]
  ref = sps.ttest_ind(a, b, equal_var=False, alternative="greater")
  assert stats.unpaired(a, b).p_greater() == pytest.approx(ref.pvalue, rel=1e-9)


def test_holm_adjustment():
  assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
  assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_equivalence_supported_only_when_interval_inside_margin():
  tight = stats.paired([0.5 + 1e-3 * i for i in range(10)], [0.5 + 1e-3 * i + 1e-4 * (-1) ** i for i in range(10)])
  rule = stats.Rule("gap", "equivalent", margin=0.01)
  assert stats.decide([tight], rule)[0] == stats.SUPPORTED
  wide = stats.Effect(0.0, 0.05, 9, 10)  # centred on 0 but too noisy to rule out a 0.01 difference
  assert stats.decide([wide], rule)[0] == stats.INCONCLUSIVE


def test_not_significant_is_inconclusive_never_refuted():
  rule = stats.Rule("acc diff", "greater", margin=0.0)
  noisy = stats.Effect(0.01, 0.02, 9, 10)
  assert stats.decide([noisy], rule)[0] == stats.INCONCLUSIVE
  clearly_worse = stats.Effect(-0.05, 0.005, 9, 10)
  assert stats.decide([clearly_worse], rule)[0] == stats.REFUTED
  clearly_better = stats.Effect(0.05, 0.005, 9, 10)
  assert stats.decide([clearly_better, clearly_worse], rule) == (stats.PARTLY, [stats.SUPPORTED, stats.REFUTED])


def test_holm_makes_a_borderline_comparison_inconclusive_in_a_family():
  e = stats.Effect(0.02, 0.0075, 9, 10)  # one-sided p ~ 0.013 (< 0.025): alone significant, not after Holm with 3 more
  rule = stats.Rule("d", "greater")
  assert stats.decide([e], rule)[0] == stats.SUPPORTED
  assert stats.decide([e] * 4, rule)[0] == stats.INCONCLUSIVE
  # The figure shows the adjusted p that decided it (in a family only: alone, the interval is the decision).
  p = e.p_greater()
  assert stats.adjusted_p_values([e] * 4, rule) == [pytest.approx((4 * p, 1.0))] * 4
  _, alone = stats.judge(rule, [("a", e)])
  _, family = stats.judge(rule, [(k, e) for k in "abcd"])
  assert "Holm" not in alone and family.count(f"Holm p {4 * p:.3f} for, bar 0.025") == 4


def test_test_set_error_widens_the_interval():
  e = stats.Effect(0.01, 0.001, 9, 10)
  wider = stats.with_test_set_error(e, [0.95, 0.94], 360)
  assert wider.se == pytest.approx(math.sqrt(0.001 ** 2 + (0.95 * 0.05 + 0.94 * 0.06) / 360))


def test_detectable_effect_shrinks_with_seeds():
  assert stats.detectable_effect(1.0, 10) < stats.detectable_effect(1.0, 3)
  assert math.isinf(stats.detectable_effect(1.0, 1))


def test_rule_is_declared_with_valid_fields():
  with pytest.raises(ValueError):
    stats.Rule("x", "bigger")
  with pytest.raises(ValueError):
    stats.Rule("x", "equivalent", margin=0.0)
  assert "within ±" in stats.Rule("gap", "equivalent", 0.02).describe()


def test_verdict_reads_off_the_printed_95_percent_interval():
  rule = stats.Rule("d", "greater")
  for se in (0.004, 0.009, 0.0102, 0.02):
    e = stats.Effect(0.02, se, 9, 10)
    lo, _ = e.interval(rule.alpha)
    assert (stats.decide([e], rule)[0] == stats.SUPPORTED) == (lo > 0)


def test_seeds_to_decide_accounts_for_the_fixed_test_set_error():
  rule = stats.Rule("d", "greater")
  e = stats.Effect(0.02, 0.01, 9, 10)
  assert stats.seeds_to_decide(e, rule) > 10
  fixed = stats.with_fixed_variance(stats.Effect(0.02, 0.001, 9, 10), 0.012 ** 2)  # test set alone: se 1.2 pts
  assert stats.seeds_to_decide(fixed, rule) is None  # 2 pts < 2.8 x 1.2 pts: no number of seeds decides it


def test_paired_test_set_variance_is_mcnemars():
  a = np.array([[1, 1, 0, 1, 0, 1, 1, 1]], bool)
  b = np.array([[1, 0, 0, 1, 1, 1, 1, 0]], bool)
  d, delta = 3 / 8, (6 - 5) / 8
  assert stats.paired_test_set_variance(a, b) == pytest.approx((d - delta ** 2) / 8)
  assert stats.paired_test_set_variance(a, a) == 0


def test_paired_accuracy_from_packed_outcomes():
  rng = np.random.default_rng(0)
  a = rng.random((10, 1000)) < 0.95
  b = a & (rng.random((10, 1000)) < 0.98)  # b wrong on ~2 % more examples, right only where a is
  assert all((stats.unpack_correct(stats.pack_correct(x)) == x).all() for x in a)
  e = stats.paired_accuracy([stats.pack_correct(x) for x in a], [stats.pack_correct(x) for x in b])
  assert e.estimate == pytest.approx(float(a.mean() - b.mean()))
  assert e.fixed_var == pytest.approx(stats.paired_test_set_variance(a, b))
  assert e.fixed_var < (0.95 * 0.05 + 0.93 * 0.07) / 1000 / 3  # far below two independent binomials
