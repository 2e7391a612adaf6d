"""The learning rates a run chose, in one sentence of results.md, from `tuning.learning_rates` tables.

    rates.sentence({"CNN": table["cnn"], "MLP": table["mlp"]}, "model")
    # 'Learning rate per model, chosen on a 800-example validation split of the training set (never the test set):
    #  the rate with the highest mean validation accuracy over 3 tuning seeds minus one standard error (...);
    #  mean validation accuracy per rate: CNN 0.003 (0.001: 93.6 %, 0.003: 96.0 %; chosen ± 0.7); MLP 0.01 (...).'
"""

from typing import Mapping


def sentence(entries: Mapping[str, dict], what: str) -> str:
  """`entries`: {display label: one model's tuning entry ("chosen", "validation_accuracy", "n_validation", and
  from tunings over several seeds "seeds", "standard_error")}; `what`: the noun the rates are per ("model",
  "variant", ...). Empty `entries`: the run did not tune."""
  if not entries:
    return f"Every {what} at the configured learning rate (no tuning)."
  sizes = {e["n_validation"] for e in entries.values()}
  seeds = {e.get("seeds", 1) for e in entries.values()}
  one_size = len(sizes) == 1
  se = lambda e: f"; chosen ± {100 * e['standard_error']:.1f}" if "standard_error" in e else ""  # noqa: E731
  cells = "; ".join(
      f"{label} {e['chosen']:g}" + ("" if one_size else f" ({e['n_validation']:,} validation examples)") + " ("
      + ", ".join(f"{rate}: {100 * acc:.1f} %" for rate, acc in e["validation_accuracy"].items()) + se(e) + ")"
      for label, e in entries.items())
  split = f"a {next(iter(sizes)):,}-example validation split" if one_size else "a validation split"
  if seeds == {1}:
    return (f"Learning rate per {what}, chosen on {split} of the training set (never the test set), validation "
            f"accuracy per rate: {cells}.")
  k = "/".join(str(n) for n in sorted(seeds))
  return (f"Learning rate per {what}, chosen on {split} of the training set (never the test set): the rate with "
          f"the highest mean validation accuracy over {k} tuning seeds minus one standard error (the split's "
          f"sampling error and the seeds' spread); mean validation accuracy per rate: {cells}.")
