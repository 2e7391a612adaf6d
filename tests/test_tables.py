"""Shared results.md tables and figures: mean ± std cells, verdicts rendered by the claims' judges, error bars."""

import numpy as np

import conftest
from cnnlab.report import figures, ledger, rendering, tables, verdicts


def test_mean_std_table_cells_and_extra_columns():
  acc = {("cnn", "0.3"): [0.5, 0.7], ("cnn", "1.0"): [0.9, 0.9]}
  md = tables.mean_std_table({"cnn": "CNN"}, {"0.3": "30%", "1.0": "100%"}, lambda m, f: acc[(m, f)], scale=100,
                             extra={"params": lambda m: 1234})
  assert md.splitlines()[0] == "| model | params | 30% | 100% |"
  assert md.splitlines()[2] == "| CNN | 1,234 | 60.0 ± 14.1 | 90.0 ± 0.0 |"


def test_verdicts_section_is_the_judges_finding_on_the_stored_form():
  seen = []

  def judge(results):
    seen.append(results)
    return ledger.Finding(f"{results['n']['0.5']} of it", verdicts.from_flag(results["n"]["0.5"] > 1))

  claim = ledger.Claim("c", "Something holds.", "someone", "n > 1", judge)
  md = tables.verdicts_section([claim], {"n": {0.5: np.int64(2)}})
  assert md == "## Verdicts\n\n- **Something holds — supported.** 2 of it.\n"
  assert seen == [{"n": {"0.5": 2}}] and type(seen[0]["n"]["0.5"]) is int  # what results.json gives the ledger
  assert rendering.stored_form({1.0: (1, np.float32(0.5))}) == {"1.0": [1, 0.5]}


def test_errorbar_curves_and_grouped_bars_draw_mean_and_spread():
  fig, (ax, bx) = rendering.new_figure(1, 2)
  figures.errorbar_curves(ax, [10, 100], {"a": [[1.0, 3.0], [2.0]]}, scale=10)
  data_line = ax.containers[0][0]  # an errorbar container: (data line, caps, bars)
  np.testing.assert_allclose(np.asarray(data_line.get_ydata(), float), [20.0, 20.0])
  assert figures.spread([1.0, 3.0]) == np.std([1.0, 3.0], ddof=1) and figures.spread([2.0]) == 0.0
  assert figures.spread([1.0, 3.0], ddof=0) == 1.0
  figures.grouped_bars(bx, ["x", "y"], {"original": [[1.0], [2.0]], "permuted": [[3.0], [4.0]]})
  assert [p.get_height() for p in bx.patches] == [1.0, 2.0, 3.0, 4.0]
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  plt.close(fig)


def test_judgements_finds_verdicts_and_flags_but_not_numbers():
  results = {"acc": [0.5, 1], "n": {"0.3": 3}, "name": "mlp", "rows": [{"ok": True}], "v": "partly supported"}
  assert conftest.judgements(results) == ["results['rows'][0]['ok']", "results['v']"]
  assert conftest.judgements({"acc": [0.5], "label": "supported by"}) == []
