"""Results on disk: results.json, results.md, Markdown tables, mean ± std, PNG figures."""

import json
import math
import os
from typing import Any, Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
  v = np.asarray(values, dtype=np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def fmt_mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
  """'m ± s' of `values * scale`."""
  m, s = mean_std(np.asarray(values) * scale)
  return f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A GitHub-flavoured Markdown table."""
  def cell(x):
    if isinstance(x, float):
      return f"{x:,.4g}" if not math.isnan(x) else "nan"
    if isinstance(x, int) and not isinstance(x, bool):
      return f"{x:,}"
    return str(x)
  lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
  lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  if hasattr(x, "__array__") and hasattr(x, "shape"):  # jax arrays
    return np.asarray(x).tolist()
  return x


def _chief() -> bool:
  from cnnlab.training import parallel  # pylint: disable=g-import-not-at-top  # keeps JAX out of this import
  return parallel.is_chief()


def stored_form(obj: Any) -> Any:
  """`obj` as results.json stores it and a judge reads it back: string keys, lists, Python numbers."""
  return json.loads(json.dumps(_jsonable(obj)))


def write_json(path: str, obj: Any) -> None:
  """Writes JSON atomically (a crash never leaves half a file); only process 0 writes in multi-process runs."""
  if not _chief():
    return
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(_jsonable(obj), f, indent=2, sort_keys=False)
    f.write("\n")
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def write_results(workdir: str, results: dict, markdown: str) -> None:
  """Writes `results.md` then `results.json`; the latter marks the run finished."""
  if not _chief():
    return
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(markdown)
  write_json(os.path.join(workdir, "results.json"), results)


def publish(workdir: str, results: dict, markdown: str) -> dict:
  """`write_results`, the Markdown printed too (the console shows what results.md holds); returns `results`."""
  write_results(workdir, results, markdown)
  print(markdown)
  return results


def save_figure(fig: Any, workdir: str, name: str) -> str:
  """Saves a matplotlib figure as `workdir/name.png`, closes it, returns the file name."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fname = f"{name}.png"
  if not _chief():
    plt.close(fig)
    return fname
  fig.savefig(os.path.join(workdir, fname), dpi=120, bbox_inches="tight")
  plt.close(fig)
  return fname


def new_figure(*args, **kwargs):
  """`plt.subplots` on the non-interactive Agg backend."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt.subplots(*args, **kwargs)
