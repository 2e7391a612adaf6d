"""Markdown tables that recur in results.md: mean ± std over seeds, and the verdicts of an experiment's claims."""

from typing import Any, Callable, Hashable, Mapping, Sequence

from cnnlab.report import rendering


def mean_std_table(rows: Mapping[Hashable, str], columns: Mapping[Hashable, str],
                   values: Callable[[Any, Any], Sequence[float]], *, scale: float = 1.0, digits: int = 1,
                   row_header: str = "model", extra: Mapping[str, Callable[[Any], Any]] | None = None) -> str:
  """One row per key of `rows` (its label first), one 'mean ± std' cell per key of `columns`.

  `values(row, column)` gives the per-seed values of a cell; `extra` maps a header to a function of the row key
  for columns placed between the label and the cells (e.g. the parameter count).
  """
  extra = extra or {}
  headers = [row_header, *extra, *columns.values()]
  body = [[label, *(f(r) for f in extra.values()),
           *(rendering.fmt_mean_std(values(r, c), scale, digits) for c in columns)] for r, label in rows.items()]
  return rendering.markdown_table(headers, body)


def verdicts_section(claims: Sequence[Any], results: dict, heading: str = "## Verdicts") -> str:
  """The claims' findings on `results` as Markdown bullets, computed by the claims' own judges."""
  # Judge what results.json will hold (string keys, lists), so results.md and the ledger read the same numbers.
  stored = rendering.stored_form(results)
  lines = [f"{heading}\n"]
  if stored.get("smoke_test"):
    lines.append("_Smoke test: a quick config (tiny sizes, few steps) exercises the code; its numbers are not "
                 "evidence, so no claim gets a verdict. Run the standard config for verdicts._\n")
  for claim in claims:
    finding = claim.assess(stored)
    rule = f" _Rule: {claim.rule.describe()}._" if claim.rule else ""
    lines.append(f"- **{claim.text.rstrip('.')} — {finding.verdict}.** {finding.figure}.{rule}")
  return "\n".join(lines) + "\n"
