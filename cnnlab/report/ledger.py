"""The claims ledger: a classic claim about CNNs, who makes it, and the rule that turns measurements into a verdict.

An experiment declares the claims it tests as a module-level list (`from cnnlab import ledger`),

    CLAIMS = [ledger.Claim(id="...", text="...", source="...", metric="...", judge=_judge_fn)]

and, for a trained comparison, `rule=stats.Rule(...)`: the metric, comparison, margin and alpha its verdict is
decided by, declared before the data and printed beside the verdict in REPORT.md. `judge(results)` reads the experiment's results.json (as a dict) and returns a `Finding`: the measured
figure in words and a verdict computed from those numbers by `cnnlab.report.verdicts`. `python run.py --report`
gathers every experiment's CLAIMS into the ledger table of REPORT.md.
"""

import dataclasses
from typing import Callable

from cnnlab.report import stats, verdicts

NOT_MEASURED = "not measured"
# Quick configs exercise the code on tiny sizes: their numbers are shown, their rules' verdicts are not issued.
SMOKE_TEST = "smoke test (no verdict)"
VERDICTS = (verdicts.SUPPORTED, verdicts.PARTLY, verdicts.REFUTED, verdicts.INCONCLUSIVE)


@dataclasses.dataclass(frozen=True)
class Finding:
  """What a claim's rule made of one experiment's results."""
  figure: str   # the measured numbers behind the verdict, in words
  verdict: str  # one of VERDICTS, or NOT_MEASURED when the results are missing


@dataclasses.dataclass(frozen=True)
class Claim:
  """One claim of the ledger, tested by the experiment whose module declares it."""
  id: str                              # short stable identifier, unique across experiments
  text: str                            # the claim, in one sentence
  source: str                          # who makes it (explainer, textbook or paper)
  metric: str                          # what is measured and the rule that gives the verdict
  judge: Callable[[dict], Finding]     # results.json of the experiment -> Finding
  rule: stats.Rule | None = None       # the decision rule of a statistical comparison (None: an exact check)

  def assess(self, results: dict | None) -> Finding:
    """The claim's finding on `results` (NOT_MEASURED if there are none or they lack what the rule reads).

    Results of a quick config (`results["smoke_test"]`) get SMOKE_TEST in place of the rule's verdict.
    """
    if results is None:
      return Finding("no results", NOT_MEASURED)
    try:
      finding = self.judge(results)
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as e:
      return Finding(f"results lack what the rule reads ({type(e).__name__}: {e})", NOT_MEASURED)
    if finding.verdict not in VERDICTS:
      raise ValueError(f"claim {self.id!r}: judge returned verdict {finding.verdict!r}, not one of {VERDICTS}")
    if results.get("smoke_test"):
      return Finding(finding.figure, SMOKE_TEST)
    return finding

  def describe_rule(self) -> str:
    """How the verdict is decided, in words: the metric, then the declared rule where there is one."""
    return self.metric + (f". Rule: {self.rule.describe()}" if self.rule else "")
