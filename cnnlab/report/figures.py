"""Plots that recur across experiments: a metric vs a size per model with error bars, grouped bars over seeds."""

from typing import Any, Mapping, Sequence

import numpy as np


def spread(values: Sequence[float], ddof: int = 1) -> float:
  """Standard deviation with `ddof` (0 when there are too few values for it)."""
  return float(np.std(values, ddof=ddof)) if len(values) > ddof else 0.0


def errorbar_curves(ax: Any, xs: Sequence[float], series: Mapping[str, Sequence[Sequence[float]]], *,
                    scale: float = 1.0, ddof: int = 1, xlabel: str = "", ylabel: str = "", logx: bool = True) -> None:
  """One line per label of `series`: mean ± std over seeds of the values at each x (series[label][i] at xs[i])."""
  for label, cells in series.items():
    ax.errorbar(list(xs), [scale * float(np.mean(v)) for v in cells], yerr=[scale * spread(v, ddof) for v in cells],
                marker="o", capsize=3, label=label)
  if logx:
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)


def grouped_bars(ax: Any, names: Sequence[str], groups: Mapping[str, Sequence[Sequence[float]]], *,
                 scale: float = 1.0, ddof: int = 1, ylabel: str = "", title: str = "") -> None:
  """Bars of mean ± std over seeds: one group per name, one bar per label of `groups` (groups[label][i] for name i)."""
  xs = np.arange(len(names))
  width = 0.8 / max(len(groups), 1)
  for j, (label, cells) in enumerate(groups.items()):
    ax.bar(xs + width * j, [scale * float(np.mean(v)) for v in cells], width,
           yerr=[scale * spread(v, ddof) for v in cells], capsize=3, label=label)
  ax.set_xticks(xs + width * (len(groups) - 1) / 2, list(names))
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize=8)


def image_panels(axes: Sequence[Any], panels: Sequence[tuple[np.ndarray, str]], fontsize: int = 8) -> None:
  """Each (image, title) on its own axis without ticks: H x W x C images in [0, 1] (clipped), C = 1 shown grey."""
  for ax, (img, title) in zip(axes, panels):
    img = np.clip(img, 0, 1)
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")
