"""Statistics for verdicts: paired effects with confidence intervals, Holm correction, equivalence tests (TOST).

A claim declares its `Rule` (metric, comparison, margin, alpha) before any data; `decide` turns a measured
`Effect` into supported / refuted / inconclusive by where its confidence interval lies against the margin:
absence of significance is never a refutation. The sampling error of a finite test set is added to the
seed-to-seed variance (`with_test_set_error`), so a 360-example test set cannot decide a 1-point difference.
"""

import base64
import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import stats as sps

SUPPORTED, PARTLY, REFUTED, INCONCLUSIVE = "supported", "partly supported", "refuted", "inconclusive"
COMPARISONS = ("greater", "less", "equivalent")


@dataclasses.dataclass(frozen=True)
class Rule:
  """How a claim is decided, declared before the data: `comparison` of `metric` against `margin` at `alpha`.

  The interval is the two-sided (1 - alpha) confidence interval (95 % at alpha 0.05), each side tested at alpha / 2,
  so the verdict reads off the interval REPORT.md prints (before Holm's adjustment across comparisons).
  greater: supported when the effect's lower bound clears `margin`, refuted when its upper bound stays below it.
  less: the mirror image. equivalent: supported when the interval lies within (-margin, margin) (TOST), refuted
  when it lies wholly outside. Anything else is inconclusive.
  """
  metric: str                 # what is compared, in words (e.g. "test accuracy, CNN minus LCN, paired by seed")
  comparison: str = "greater"  # one of COMPARISONS
  margin: float = 0.0         # smallest effect that counts (same units as the metric)
  alpha: float = 0.05         # 1 - confidence of the interval; family-wise across the claim's comparisons (Holm)

  def __post_init__(self):
    if self.comparison not in COMPARISONS:
      raise ValueError(f"comparison must be one of {COMPARISONS}, got {self.comparison!r}")
    if not 0 < self.alpha < 1 or self.margin < 0 or (self.comparison == "equivalent" and self.margin == 0):
      raise ValueError(f"bad rule: alpha {self.alpha}, margin {self.margin} for {self.comparison!r}")

  def describe(self) -> str:
    sign = {"greater": ">", "less": "<", "equivalent": "within ±"}[self.comparison]
    return (f"{self.metric}: {sign} {self.margin:g}, judged on the {100 * (1 - self.alpha):g} % confidence "
            "interval (Holm across comparisons)")


@dataclasses.dataclass(frozen=True)
class Effect:
  """A mean difference (or mean) with its standard error and degrees of freedom."""
  estimate: float
  se: float
  df: float
  n: int
  fixed_var: float = 0.0  # part of se**2 that more seeds do not shrink (a finite test set's sampling variance)

  def interval(self, alpha: float = 0.05, sided: int = 2) -> tuple[float, float]:
    """The (1 - alpha) confidence interval; `sided=1` gives the (1 - 2 alpha) one that TOST reads."""
    if self.se == 0 or self.n < 2:
      return (self.estimate, self.estimate) if self.se == 0 and self.n >= 2 else (-math.inf, math.inf)
    t = sps.t.ppf(1 - alpha / sided, self.df)
    return self.estimate - t * self.se, self.estimate + t * self.se

  def p_greater(self, threshold: float = 0.0) -> float:
    """One-sided p-value of H0: effect <= threshold."""
    if self.n < 2:
      return 1.0
    if self.se == 0:
      return 0.0 if self.estimate > threshold else 1.0
    return float(sps.t.sf((self.estimate - threshold) / self.se, self.df))

  def p_less(self, threshold: float = 0.0) -> float:
    """One-sided p-value of H0: effect >= threshold."""
    return Effect(-self.estimate, self.se, self.df, self.n).p_greater(-threshold)


def paired(a: Sequence[float], b: Sequence[float]) -> Effect:
  """mean(a - b) over pairs that share a seed (and data subset): the paired t statistic's pieces."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  if d.ndim != 1 or len(d) == 0:
    raise ValueError("paired samples must be equal-length, non-empty 1-D sequences")
  se = float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf
  return Effect(float(d.mean()), se, len(d) - 1, len(d))


def unpaired(a: Sequence[float], b: Sequence[float]) -> Effect:
  """mean(a) - mean(b) for independent samples, Welch's standard error and degrees of freedom."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if len(a) < 2 or len(b) < 2:
    return Effect(float(a.mean() - b.mean()), math.inf, 1, min(len(a), len(b)))
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  se = math.sqrt(va + vb)
  df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else len(a) + len(b) - 2
  return Effect(float(a.mean() - b.mean()), se, float(df), min(len(a), len(b)))


def with_test_set_error(effect: Effect, accuracies: Sequence[float], n_test: int) -> Effect:
  """`effect` with the binomial sampling variance of a finite test set of `n_test` examples added.

  `accuracies` are the mean accuracies of the arms compared (one for a single mean, two for a difference); the
  arms' errors are treated as independent, which over-states the variance of a paired difference on one test
  set (a conservative interval).
  """
  extra = sum(p * (1 - p) for p in accuracies) / n_test
  return with_fixed_variance(effect, extra)


def with_fixed_variance(effect: Effect, extra: float) -> Effect:
  """`effect` with a variance that does not shrink with more seeds (e.g. test-set sampling) added to its se."""
  return dataclasses.replace(effect, se=math.sqrt(effect.se ** 2 + extra), fixed_var=effect.fixed_var + extra)


def paired_test_set_variance(correct_a: Sequence[Sequence[bool]], correct_b: Sequence[Sequence[bool]]) -> float:
  """Sampling variance of an accuracy difference between two arms scored on the same test examples.

  `correct_a[i]`, `correct_b[i]`: per-example correctness of seed i's two arms. Over examples drawn from the
  population, the difference of accuracies of one pair has variance (d - delta**2) / N, d the fraction of
  discordant examples (one arm right, the other wrong) and delta the accuracy difference (McNemar's paired
  variance); averaged over seeds. Far smaller than two independent binomials when the arms mostly agree.
  """
  values = []
  for a, b in zip(correct_a, correct_b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
      raise ValueError("per-example correctness of both arms must be equal-length, non-empty 1-D sequences")
    d, delta = float(np.mean(a != b)), float(np.mean(a) - np.mean(b))
    values.append((d - delta ** 2) / len(a))
  if not values:
    raise ValueError("no pairs")
  return float(np.mean(values))


def pack_correct(correct: Sequence[bool]) -> str:
  """Per-example correctness as a short string for results.json (`unpack_correct` reads it back)."""
  correct = np.asarray(correct, bool)
  return f"{len(correct)}:" + base64.b64encode(np.packbits(correct).tobytes()).decode("ascii")


def unpack_correct(packed: str) -> np.ndarray:
  n, _, body = packed.partition(":")
  return np.unpackbits(np.frombuffer(base64.b64decode(body), np.uint8))[:int(n)].astype(bool)


def paired_accuracy(correct_a: Sequence[str], correct_b: Sequence[str]) -> Effect:
  """Accuracy of arm a minus arm b, paired by seed, on one shared test set, from packed per-example correctness.

  The interval covers both the seed-to-seed spread and the test set's own sampling error, the latter by McNemar's
  paired variance (`paired_test_set_variance`): what a finite shared test set adds, without treating two arms
  scored on the same examples as independent.
  """
  a, b = [unpack_correct(c) for c in correct_a], [unpack_correct(c) for c in correct_b]
  effect = paired([x.mean() for x in a], [y.mean() for y in b])
  return with_fixed_variance(effect, paired_test_set_variance(a, b))


def holm(p_values: Sequence[float]) -> list[float]:
  """Holm-Bonferroni adjusted p-values (monotone, capped at 1), in the input order."""
  p = np.asarray(p_values, np.float64)
  order = np.argsort(p, kind="stable")
  adjusted = np.empty_like(p)
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (len(p) - rank) * p[i]))
    adjusted[i] = running
  return adjusted.tolist()


def p_values(effect: Effect, rule: Rule) -> tuple[float, float]:
  """(p for the claim, p against it): the two one-sided tests the rule's verdict rests on."""
  m = rule.margin
  if rule.comparison == "greater":
    return effect.p_greater(m), effect.p_less(m)
  if rule.comparison == "less":
    return effect.p_less(-m), effect.p_greater(-m)
  tost = max(effect.p_greater(-m), effect.p_less(m))  # inside (-m, m)
  outside = min(effect.p_greater(m), effect.p_less(-m))  # wholly beyond one side
  return tost, outside


def adjusted_p_values(effects: Sequence[Effect], rule: Rule) -> list[tuple[float, float]]:
  """Each comparison's (p for the claim, p against it), Holm-adjusted within each direction across `effects`."""
  pairs = [p_values(e, rule) for e in effects]
  return list(zip(holm([p for p, _ in pairs]), holm([q for _, q in pairs])))


def decide(effects: Sequence[Effect], rule: Rule) -> tuple[str, list[str]]:
  """The claim's verdict over its comparisons (Holm within each direction) and each comparison's verdict."""
  each = [SUPPORTED if pf <= rule.alpha / 2 else REFUTED if pa <= rule.alpha / 2 else INCONCLUSIVE
          for pf, pa in adjusted_p_values(effects, rule)]
  return combine(each), each


def combine(verdicts: Sequence[str]) -> str:
  """All supported: supported; none decided: inconclusive; some supported: partly; else (some refuted): refuted."""
  if not verdicts:
    raise ValueError("no comparisons to combine")
  if all(v == SUPPORTED for v in verdicts):
    return SUPPORTED
  if all(v == INCONCLUSIVE for v in verdicts):
    return INCONCLUSIVE
  return PARTLY if SUPPORTED in verdicts else REFUTED


def detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
  """Smallest true effect a one-sided paired t-test on `n` pairs of spread `sd` detects with `power`."""
  if n < 2:
    return math.inf
  df = n - 1
  return float((sps.t.ppf(1 - alpha, df) + sps.t.ppf(power, df)) * sd / math.sqrt(n))


def seeds_to_decide(effect: Effect, rule: Rule, power: float = 0.8) -> int | None:
  """Seeds (pairs) at which an effect of this size and spread would be decided with `power`; None if never.

  The distance to decide is how far the estimate lies from the margin it must clear (or, for equivalence, from the
  nearer edge of the band); an estimate sitting on that edge cannot be decided by more seeds.
  """
  m = rule.margin
  gap = (abs(effect.estimate - m) if rule.comparison == "greater" else abs(effect.estimate + m)
         if rule.comparison == "less" else m - abs(effect.estimate))
  if gap <= 0 or not math.isfinite(effect.se) or effect.n < 2:
    return None
  seed_var = max(effect.se ** 2 - effect.fixed_var, 0.0) * effect.n  # per-seed variance of the difference
  z = sps.norm.ppf(1 - rule.alpha / 2) + sps.norm.ppf(power)
  room = gap ** 2 - z ** 2 * effect.fixed_var  # what the seed-to-seed part may use once the fixed part is paid
  if room <= 0:
    return None  # the test set's own sampling error alone keeps it undecided: more data, not more seeds
  return max(effect.n + 1, math.ceil(z ** 2 * seed_var / room) + 1)


def judge(rule: Rule, comparisons: Sequence[tuple[str, Effect]], scale: float = 1.0, unit: str = "",
          digits: int = 1) -> tuple[str, str]:
  """(verdict, figure): `decide` over labelled effects, each shown with its 95 % interval and own verdict.

  `scale`/`unit`/`digits` format the numbers (e.g. 100, " pts"). With several comparisons each also shows its
  Holm-adjusted one-sided p-value, the one that decides it (its interval is the unadjusted one, so it can clear
  the margin while the comparison stays inconclusive). An inconclusive comparison says how many seeds would
  decide an effect of its measured size and spread; every figure ends with the smallest effect the design
  detects (one-sided, power 0.8, the least noisy comparison).
  """
  if not comparisons:
    raise ValueError("no comparisons to judge")
  verdict, each = decide([e for _, e in comparisons], rule)
  adjusted = adjusted_p_values([e for _, e in comparisons], rule)
  f = lambda v: f"{scale * v:+.{digits}f}"
  parts = []
  for (label, e), v, (p_for, p_against) in zip(comparisons, each, adjusted):
    lo, hi = e.interval(rule.alpha)
    part = f"{label} {f(e.estimate)}{unit} [{f(lo)}, {f(hi)}] ({v}"
    if len(comparisons) > 1:
      side, p = ("for", p_for) if p_for <= p_against else ("against", p_against)
      part += f"; Holm p {_fmt_p(p)} {side}, bar {rule.alpha / 2:g}"
    if v == INCONCLUSIVE:
      need = seeds_to_decide(e, rule)
      part += (f"; ~{need} seeds would decide it" if need else
               "; more seeds cannot decide it (on the margin, or a larger test set is needed)")
    parts.append(part + ")")
  e = min((e for _, e in comparisons), key=lambda e: e.se)
  mde = detectable_effect(e.se * math.sqrt(e.n), e.n, rule.alpha / 2)  # se * sqrt(n): so the fixed part counts fully
  return verdict, "; ".join(parts) + f"; detectable effect ≈ {scale * mde:.{digits}f}{unit} at n={e.n}"


def _fmt_p(p: float) -> str:
  return f"{p:.3f}" if p >= 0.001 else "< 0.001"
