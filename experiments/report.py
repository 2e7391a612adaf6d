"""Every claim in the ledger gets a measured verdict: runs the experiments and writes REPORT.md.

Runs each experiment whose results are missing or stale (its config or its module's source changed since
it ran) in `<workdir>/<experiment>/`, reuses the others, and writes `<workdir>/REPORT.md`: the claims
ledger (claim, source, measured figure, verdict — each verdict computed by the claim's rule from that
experiment's results.json), one section per experiment with its tables and figures, the environment and
the run time. An interrupted report resumes: finished experiments are reused and an interrupted one
continues from its checkpoints. `--config.readme=README.md` also refreshes the ledger excerpt in the README.

Command:  python run.py --exp=report                 (standard configs, workdir runs/report)
          python run.py --exp=report --quick         (every experiment's quick config, runs/report-quick)
Run time: standard report: see REPORT.md's footer for the measured time; quick: a few minutes on 2 CPU cores.
Result:   REPORT.md; the README shows its ledger.
"""

import datetime
import hashlib
import os
import platform
import re
import shutil
import sys
import time

import flax
import jax
import ml_collections
import numpy as np
import optax

import experiments
from cnnlab import ledger, reporting, runner
from cnnlab.errors import TrainingDiverged, UserError

# Fields that change what the report shows, not what its experiments compute: a workdir stays reusable.
VOLATILE_FIELDS = ("experiments", "readme", "rerun")
README_BEGIN, README_END = "<!-- report:begin -->", "<!-- report:end -->"
# Ledger order: from the anatomy of a conv layer to what trained nets do; experiments not named here follow.
ORDER = ("param_count", "weight_sharing", "conv_arithmetic", "conv_as_matmul", "classic_kernels", "receptive_field",
         "translation", "pooling", "spatial_prior", "overfitting", "depth_and_gradients", "deep_image_prior")


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.quick = quick          # run every experiment's quick config (tiny sizes) instead of its standard one
  c.experiments = ""       # comma-separated experiments to include; '' means every one that declares CLAIMS
  c.rerun = False          # re-run every included experiment even if its results are current
  c.readme = ""            # if set, replace the README block between the report markers with the ledger table
  return c


def default_workdir(config: ml_collections.ConfigDict) -> str:
  """A fixed workdir per mode, so that running the report again reuses what is already measured."""
  return os.path.join("runs", "report-quick" if config.quick else "report")


def selected(config: ml_collections.ConfigDict) -> list[str]:
  """The experiments the report covers, in registry order."""
  with_claims = [n for n in experiments.names() if getattr(experiments.get(n), "CLAIMS", None)]
  wanted = [n.strip() for n in config.experiments.split(",") if n.strip()]
  unknown = sorted(set(wanted) - set(with_claims))
  if unknown:
    raise UserError(f"report: no experiment with claims called {', '.join(unknown)}; choose from "
                    f"{', '.join(with_claims)}")
  names = [n for n in with_claims if n in wanted] if wanted else with_claims
  return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


def source_digest(module) -> str:
  with open(module.__file__, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()[:16]


def _stale_reason(module, exp_config: ml_collections.ConfigDict, subdir: str) -> str:
  """Why the results in `subdir` cannot be reused ('' if they can or there are none yet)."""
  config_path = os.path.join(subdir, "config.json")
  if not os.path.exists(config_path):
    return ""
  if reporting.read_json(config_path) != runner.config_dict(exp_config):
    return "its config changed"
  prov_path = os.path.join(subdir, "provenance.json")
  if os.path.exists(prov_path) and reporting.read_json(prov_path)["source"] != source_digest(module):
    return "its source changed"
  return ""


def ensure_results(name: str, exp_config: ml_collections.ConfigDict, subdir: str, rerun: bool) -> dict:
  """Runs experiment `name` in `subdir` unless current results are there; returns its provenance."""
  module = experiments.get(name)
  done = os.path.exists(os.path.join(subdir, "results.json"))
  reason = "re-run requested" if rerun and done else _stale_reason(module, exp_config, subdir)
  if reason:  # keep the old results next to the new ones, never delete measurements
    moved = f"{subdir}.stale-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    print(f"report: {name}: {reason}; moving the old run to {moved}")
    shutil.move(subdir, moved)
    done = False
  prov_path = os.path.join(subdir, "provenance.json")
  if done:  # a finished run (one put there by hand has no provenance: its run time is unknown)
    prov = reporting.read_json(prov_path) if os.path.exists(prov_path) else {"source": "unknown", "seconds": 0.0}
    return {**prov, "status": "reused"}
  print(f"report: running {name} in {subdir}")
  start, cpu_start = time.time(), time.process_time()
  try:
    runner.run_experiment(module, exp_config, subdir)
    status = "ran"
  except (UserError, TrainingDiverged) as e:  # one failed experiment leaves its claims "not measured"
    print(f"report: {name} failed: {e}", file=sys.stderr)
    return {"source": source_digest(module), "seconds": time.time() - start, "status": f"failed: {e}"}
  prov = {"source": source_digest(module), "seconds": round(time.time() - start, 1),
          "cpu_seconds": round(time.process_time() - cpu_start, 1),  # all threads: independent of machine load
          "finished": datetime.datetime.now().isoformat(timespec="seconds"), "backend": jax.default_backend()}
  reporting.write_json(prov_path, prov)
  return {**prov, "status": status}


def environment() -> dict:
  return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "numpy": np.__version__, "backend": jax.default_backend(),
          "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}", "cpu_cores": os.cpu_count(),
          "platform": platform.platform()}


def ledger_table(rows: list[dict]) -> str:
  return reporting.markdown_table(["claim", "source", "experiment", "measured", "verdict"],
                                  [[r["text"], r["source"], f"`{r['experiment']}`", r["figure"], f"**{r['verdict']}**"]
                                   for r in rows])


def _section(name: str, subdir: str, prov: dict) -> str:
  """An experiment's results.md, its headings demoted and its figure links made relative to REPORT.md."""
  path = os.path.join(subdir, "results.md")
  body = open(path).read() if os.path.exists(path) else "_No results._\n"
  body = re.sub(r"^(#+) ", r"##\1 ", body, flags=re.M)
  body = re.sub(r"\]\(([^)/:]+\.png)\)", rf"]({name}/\1)", body)
  when = f"{prov['seconds']:.0f} s" + (" (reused)" if prov["status"] == "reused" else "")
  if prov["status"].startswith("failed"):
    when = prov["status"]
  return (f"## `{name}` — {experiments.claim(name)}\n\n`python run.py --exp={name}` · {when} · "
          f"[results.md]({name}/results.md)\n\n{body.strip()}\n")


def update_readme(path: str, table: str, summary: str) -> None:
  """Replaces the README block between the report markers with the ledger (a one-line error if they are missing)."""
  try:
    text = open(path).read()
  except OSError as e:
    raise UserError(f"report: cannot read README {path!r}: {e.strerror}") from None
  if README_BEGIN not in text or README_END not in text:
    raise UserError(f"report: {path!r} has no {README_BEGIN} ... {README_END} block to fill")
  head, rest = text.split(README_BEGIN, 1)
  _, tail = rest.split(README_END, 1)
  block = (f"{README_BEGIN}\n<!-- generated by `python run.py --exp=report --config.readme={path}`; "
           f"do not edit by hand -->\n{summary}\n\n{table}{README_END}")
  with open(path, "w") as f:
    f.write(head + block + tail)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  start = time.time()
  names = selected(config)
  rows, sections, provs = [], [], {}
  for name in names:
    module = experiments.get(name)
    exp_config = module.get_config(quick=config.quick)
    subdir = os.path.join(workdir, name)
    provs[name] = ensure_results(name, exp_config, subdir, config.rerun)
    results_path = os.path.join(subdir, "results.json")
    results = reporting.read_json(results_path) if os.path.exists(results_path) else None
    for claim in module.CLAIMS:
      finding = claim.assess(results)
      rows.append({"id": claim.id, "text": claim.text, "source": claim.source, "experiment": name,
                   "metric": claim.metric, "figure": finding.figure, "verdict": finding.verdict})
    sections.append(_section(name, subdir, provs[name]))
  wall = time.time() - start
  counts = {v: sum(r["verdict"] == v for r in rows) for v in (*ledger.VERDICTS, ledger.NOT_MEASURED)}
  compute = sum(p["seconds"] for p in provs.values())
  mode = "quick configs" if config.quick else "standard configs"
  summary = (f"{len(rows)} claims from {len(names)} experiments ({mode}): "
             + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ".")
  env = environment()
  table = ledger_table(rows)
  ran = [n for n, p in provs.items() if p["status"] == "ran"]
  timing = (f"This report took {wall:.0f} s ({wall / 60:.1f} min) on {env['devices']} ({env['cpu_cores']} CPU cores), "
            f"running {len(ran)} of {len(names)} experiments; the experiments' own run times sum to {compute:.0f} s "
            f"({compute / 60:.1f} min).")
  md = "\n".join([
      "# cnnlab report: classic claims about CNNs, measured\n",
      f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
      f"`python run.py --exp=report{' --quick' if config.quick else ''}`. {summary} Each verdict is computed by "
      "the claim's rule (`CLAIMS` in the experiment's module) from that experiment's `results.json`.\n",
      "## The claims ledger\n", table,
      "How each verdict is measured:\n", *[f"- `{r['id']}`: {r['metric']}." for r in rows], "",
      "## Environment\n", reporting.markdown_table(["", ""], [[k, v] for k, v in env.items()]),
      f"{timing}\n", *sections])
  with open(os.path.join(workdir, "REPORT.md"), "w") as f:
    f.write(md)
  with open(os.path.join(workdir, "results.md"), "w") as f:  # what run.py points to; no results.json: never skipped
    f.write(f"{summary}\n\n{table}\nFull report: REPORT.md\n")
  report = {"claims": rows, "counts": counts, "experiments": provs, "environment": env, "seconds": wall,
            "experiment_seconds": compute, "quick": config.quick}
  reporting.write_json(os.path.join(workdir, "report.json"), report)
  if config.readme:
    update_readme(config.readme, table, summary)
  print(f"report: {summary} {timing}\nReport: {os.path.join(workdir, 'REPORT.md')}")
  return report
