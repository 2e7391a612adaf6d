"""REPORT.md and the README blocks: the claims ledger, each experiment's section and provenance, the environment."""

import datetime
import os
import platform
import re

from cnnlab import provenance
from cnnlab.errors import UserError
from cnnlab.report import rendering

README_BEGIN, README_END = "<!-- report:begin -->", "<!-- report:end -->"
EXPERIMENTS_BEGIN, EXPERIMENTS_END = "<!-- experiments:begin -->", "<!-- experiments:end -->"


def environment() -> dict:
  """The software and hardware a report ran on."""
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "numpy": np.__version__, "backend": jax.default_backend(),
          "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}", "cpu_cores": os.cpu_count(),
          "platform": platform.platform()}


def _verdict(r: dict) -> str:
  if "stable" not in r:
    return f"**{r['verdict']}**"
  if r["stable"] is None:
    return f"**{r['verdict']}** (not compared: {r['other_verdict']} on the other seed set)"
  if r["stable"]:
    return f"**{r['verdict']}** (both seed sets)"
  return f"**unstable**: {r['verdict']} here, {r['other_verdict']} on the other seed set"


def ledger_table(rows: list[dict]) -> str:
  """The claims ledger; with a second seed set compared (`build.compare`), each verdict says if it held on both."""
  return rendering.markdown_table(["claim", "source", "experiment", "measured", "verdict"],
                                  [[r["text"], r["source"], f"`{r['experiment']}`", r["figure"], _verdict(r)]
                                   for r in rows])


def _when(prov: dict) -> str:
  if prov["status"].startswith("failed"):
    return prov["status"]
  if not prov.get("seconds"):
    return "not run"
  return f"{prov['seconds']:.0f} s" + (" (reused)" if prov["status"] == "reused" else "")


def _code(stamp: dict) -> str:
  """A stamp's cnnlab code as a table cell: a digest of its file hashes and how many files they cover."""
  code = stamp.get("code")
  if code is None:
    return "—"
  if isinstance(code, str):
    return f"`{code}` (whole package)"
  return f"`{provenance.digest(code)}` ({len(code)} files)"


def provenance_table(provs: dict[str, dict]) -> str:
  """One row per experiment: how it was obtained, when, and the stamp it was computed with."""
  rows = []
  for name, p in provs.items():
    stamp = p.get("provenance") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (stamp.get("versions") or {}).items() if v) or "not recorded"
    rows.append([f"`{name}`", p["status"], _when(p), p.get("finished", "—"), _code(stamp),
                 f"`{stamp.get('module', '—')}`", versions])
  return rendering.markdown_table(["experiment", "status", "run time", "finished", "cnnlab code", "module",
                                   "versions"], rows)


def experiments_table(provs: dict[str, dict], claims: dict[str, str], quick: bool) -> str:
  """The README's experiment table: each experiment, its claim, its command and its last run time."""
  flag = " --quick" if quick else ""
  return rendering.markdown_table(
      ["experiment", "claim tested", "command", "last run time", "finished"],
      [[f"`{n}`", claims[n], f"`python run.py --exp={n}{flag}`", _when(p), p.get("finished", "—")]
       for n, p in provs.items()])


def section(name: str, claim: str, subdir: str, prov: dict) -> str:
  """An experiment's results.md, its headings demoted and its figure links made relative to REPORT.md."""
  path = os.path.join(subdir, "results.md")
  body = open(path, encoding="utf-8").read() if os.path.exists(path) else "_No results._\n"
  body = re.sub(r"^(#+) ", r"##\1 ", body, flags=re.M)
  body = re.sub(r"\]\(([^)/:]+\.png)\)", rf"]({name}/\1)", body)
  stamp = prov.get("provenance") or {}
  made = f" · code {_code(stamp)}, module `{stamp['module']}`" if stamp else ""
  return (f"## `{name}` — {claim}\n\n`python run.py --exp={name}` · {_when(prov)}{made} · "
          f"[results.md]({name}/results.md)\n\n{body.strip()}\n")


def report_markdown(rows: list[dict], sections: list[str], provs: dict[str, dict], env: dict, summary: str,
                    timing: str, command: str) -> str:
  """REPORT.md: the ledger, how each verdict is measured, provenance, environment, then one section per experiment."""
  return "\n".join([
      "# cnnlab report: classic claims about CNNs, measured\n",
      f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `{command}`. {summary} Each "
      "verdict is computed by the claim's rule (`CLAIMS` in the experiment's module) from that experiment's "
      "`results.json`.\n",
      "## The claims ledger\n", ledger_table(rows),
      "How each verdict is measured:\n", *[f"- `{r['id']}`: {r['metric']}." for r in rows], "",
      "## Provenance\n",
      "A result is reused only while its config, its module's code, the code of every cnnlab file it used (each "
      "file its module imports, directly or not, the dataset package, and the models it looked up by name) "
      "and the library versions all match what it was computed with (hashes ignore comments and docstrings).\n",
      provenance_table(provs),
      "## Environment\n", rendering.markdown_table(["", ""], [[k, v] for k, v in env.items()]),
      f"{timing}\n", *sections])


def _fill(text: str, begin: str, end: str, block: str) -> str:
  head, rest = text.split(begin, 1)
  _, tail = rest.split(end, 1)
  return f"{head}{begin}\n{block}{end}{tail}"


def update_readme(path: str, ledger: str, summary: str, experiments: str, command: str) -> None:
  """Refreshes the README's ledger block (required) and its experiment table block (where present)."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except OSError as e:
    raise UserError(f"report: cannot read README {path!r}: {e.strerror}") from None
  if README_BEGIN not in text or README_END not in text:
    raise UserError(f"report: {path!r} has no {README_BEGIN} ... {README_END} block to fill")
  note = f"<!-- generated by `{command}`; do not edit by hand -->\n"
  text = _fill(text, README_BEGIN, README_END, f"{note}{summary}\n\n{ledger}")
  if EXPERIMENTS_BEGIN in text and EXPERIMENTS_END in text:
    text = _fill(text, EXPERIMENTS_BEGIN, EXPERIMENTS_END, f"{note}{experiments}")
  else:
    print(f"report: {path} has no {EXPERIMENTS_BEGIN} ... {EXPERIMENTS_END} block; its experiment table is not "
          "refreshed")
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)
