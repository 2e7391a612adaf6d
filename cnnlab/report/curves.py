"""Training curves of a sweep's trials, read back from their logs: the evidence that a budget reached its plateau.

    curves = curves.train_loss(workdir, {"cnn": ["cnn_f1.0_s0", "cnn_f1.0_s1"], ...})
    # {"cnn": {"steps": [100, 200, ...], "loss": [[seed 0, seed 1], ...]}, ...}   (stored in results.json)
    headers, rows = curves.plateau_rows(curves, labels)   # mean ± std at half, three quarters and all the steps
    curves.plot(workdir, "learning_curves", curves, labels)
"""

import os
from typing import Mapping, Sequence

import numpy as np

from cnnlab.report import rendering
from cnnlab.training import metric_writer

_AT = (0.5, 0.75, 1.0)  # fractions of the step budget where `plateau_rows` reads the curves


def train_loss(workdir: str, trials: Mapping[str, Sequence[str]]) -> dict[str, dict]:
  """Per group: the logged train loss (on batches) of each named trial under `workdir`'s sweep, at the steps
  every one of them logged: {"steps": [...], "loss": [[one value per trial] per step]}."""
  out = {}
  for group, names in trials.items():
    per_trial = []
    for name in names:
      rows = metric_writer.read_metrics(os.path.join(workdir, "trials", name))
      per_trial.append({r["step"]: r["train_loss"] for r in rows if "train_loss" in r})  # a resumed run logs
      # its last steps again: the last value wins
    steps = sorted(set.intersection(*(set(d) for d in per_trial)))
    out[group] = {"steps": steps, "loss": [[d[t] for d in per_trial] for t in steps]}
  return out


def plateau_rows(curves: Mapping[str, dict], labels: Mapping[str, str],
                 first: str = "model") -> tuple[list[str], list[list]]:
  """(headers, rows): each group's mean ± std train loss at the logged steps nearest half, three quarters and all
  of its budget (groups may have budgets of their own)."""
  rows = []
  for g, c in curves.items():
    at = dict(zip(c["steps"], c["loss"]))
    picks = [min(c["steps"], key=lambda t, f=f: abs(t - f * c["steps"][-1])) for f in _AT]
    rows.append([labels[g], *(f"{rendering.fmt_mean_std(at[t], 1, 3)} (step {t})" for t in picks)])
  return [first, *(f"train loss at {f:.0%} of the steps" for f in _AT)], rows


def plot(workdir: str, name: str, curves: Mapping[str, dict], labels: Mapping[str, str]) -> None:
  """`name`.png: each group's mean train loss (log scale) with the min-max band over its trials."""
  fig, ax = rendering.new_figure(1, 1, figsize=(5, 3.5))
  for g, c in curves.items():
    loss = np.asarray(c["loss"])
    ax.plot(c["steps"], loss.mean(1), label=labels[g])
    ax.fill_between(c["steps"], loss.min(1), loss.max(1), alpha=0.2)
  ax.set(xlabel="step", ylabel="train loss (batches)", yscale="log")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  rendering.save_figure(fig, workdir, name)
