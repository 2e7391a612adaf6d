"""Every claim in the ledger gets a measured verdict: runs the experiments and writes REPORT.md.

Runs each experiment whose results are missing or stale (its config or its module's source changed since
it ran) in `<workdir>/<experiment>/`, reuses the others, and writes `<workdir>/REPORT.md`: the claims
ledger (claim, source, measured figure, verdict — each verdict computed by the claim's rule from that
experiment's results.json), one section per experiment with its tables and figures, the environment and
the run time. An interrupted report resumes: finished experiments are reused and an interrupted one
continues from its checkpoints. `--config.readme=README.md` also refreshes the ledger excerpt in the README.

Command:  python run.py --exp=report                 (standard configs, workdir runs/report)
          python run.py --exp=report --quick         (every experiment's quick config, runs/report-quick)
Run time: standard report 11.7-12.0 min in fresh runs on 2 CPU cores (14 experiments, 2 at a time, 2026-11-28;
          14.0-14.4 min before the XLA:CPU flag and the last fast paths; the budget is 15); quick ~4 min.
Result:   REPORT.md; the README shows its ledger.
"""

import datetime
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

import flax
import jax
import ml_collections
import numpy as np
import optax

import experiments
from cnnlab import runner
from cnnlab.report import ledger, rendering as reporting
from cnnlab.training import preemption
from cnnlab.errors import Preempted, TrainingDiverged, UserError

# Fields that change what the report shows, not what its experiments compute: a workdir stays reusable.
VOLATILE_FIELDS = ("experiments", "readme", "rerun", "workers")
RUN_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run.py")
README_BEGIN, README_END = "<!-- report:begin -->", "<!-- report:end -->"
# Ledger order: from the anatomy of a conv layer to what trained nets do; experiments not named here follow.
ORDER = ("param_count", "weight_sharing", "conv_arithmetic", "conv_as_matmul", "classic_kernels", "receptive_field",
         "translation", "pooling", "spatial_prior", "overfitting", "depth_and_gradients", "deep_image_prior",
         "localisation", "segmentation")


# Run order with parallel workers: slowest first (standard run times measured 2026-11-28), so that the short
# ones fill the gaps at the end; experiments not named here go first (their time is unknown).
SLOWEST_FIRST = ("deep_image_prior", "segmentation", "depth_and_gradients", "pooling", "weight_sharing", "overfitting",
                 "spatial_prior", "translation", "localisation", "receptive_field", "classic_kernels",
                 "conv_as_matmul", "conv_arithmetic", "param_count")


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.quick = quick          # run every experiment's quick config (tiny sizes) instead of its standard one
  c.experiments = ""       # comma-separated experiments to include; '' means every one that declares CLAIMS
  c.rerun = False          # re-run every included experiment even if its results are current
  c.readme = ""            # if set, replace the README block between the report markers with the ledger table
  c.workers = 0            # experiments at once, each its own run.py process; 0: one per CPU core (at most 4) on
                           # a CPU backend, where one XLA process uses ~1 core on these small nets; 1 elsewhere
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


def needs_run(name: str, exp_config: ml_collections.ConfigDict, subdir: str, rerun: bool) -> bool:
  """True if `name` must run in `subdir`; stale results (config or source changed) are moved aside first."""
  module = experiments.get(name)
  done = os.path.exists(os.path.join(subdir, "results.json"))
  config_path, info = os.path.join(subdir, "config.json"), run_info(subdir)
  reason = ""
  if rerun and done:
    reason = "re-run requested"
  elif os.path.exists(config_path) and reporting.read_json(config_path) != runner.config_dict(exp_config):
    reason = "its config changed"
  elif info.get("source", runner.source_digest(module)) != runner.source_digest(module):
    reason = "its source changed"
  if reason:  # keep the old run next to the new one: measurements are never deleted
    moved = f"{subdir}.stale-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    print(f"report: {name}: {reason}; moving the old run to {moved}")
    shutil.move(subdir, moved)
    return True
  return not done


def run_info(subdir: str) -> dict:
  """What `runner.run_experiment` recorded about a finished run (empty if there is none)."""
  path = os.path.join(subdir, "run_info.json")
  return reporting.read_json(path) if os.path.exists(path) else {}


def _run_here(name: str, exp_config: ml_collections.ConfigDict, subdir: str) -> str:
  print(f"report: running {name} in {subdir}")
  try:
    runner.run_experiment(experiments.get(name), exp_config, subdir)
    return "ran"
  except (UserError, TrainingDiverged) as e:  # one failed experiment leaves its claims "not measured"
    print(f"report: {name} failed: {e}", file=sys.stderr)
    return f"failed: {e}"


def _last_line(path: str) -> str:
  lines = [l.strip() for l in open(path, errors="replace").read().replace("\r", "\n").splitlines() if l.strip()]
  return lines[-1] if lines else ""


def _run_in_processes(jobs: dict[str, str], quick: bool, workers: int, workdir: str) -> dict[str, str]:
  """Runs {name: subdir} `workers` at a time, each as its own run.py process logging to <subdir>/log.txt.

  On SIGTERM/SIGINT every running experiment gets one SIGTERM (it checkpoints and stops) and the report
  stops with Preempted; rerunning resumes them.
  """
  queue, running, status = list(jobs), {}, {}
  with preemption.catch_termination() as stop:
    try:
      while queue or running:
        while queue and len(running) < workers and not stop.requested:
          name = queue.pop(0)
          os.makedirs(jobs[name], exist_ok=True)
          log = open(os.path.join(jobs[name], "log.txt"), "a")
          cmd = [sys.executable, RUN_PY, f"--exp={name}", f"--workdir={jobs[name]}", *(["--quick"] if quick else [])]
          print(f"report: running {name} in {jobs[name]} (log: {log.name})")
          # Own session: a Ctrl-C reaches the report only, which forwards exactly one SIGTERM below.
          running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log)
        if stop.requested:
          for proc, _ in running.values():
            proc.send_signal(signal.SIGTERM)
          for proc, log in running.values():
            proc.wait()
            log.close()
          running.clear()
          raise Preempted(0, stop.signum, workdir)
        for name, (proc, log) in list(running.items()):
          if proc.poll() is not None:
            log.close()
            del running[name]
            status[name] = "ran" if proc.returncode == 0 else (
                f"failed (exit {proc.returncode}): {_last_line(log.name)}")
            print(f"report: {name} {status[name]}")
        time.sleep(0.2)
    finally:  # an unexpected error here must not leave experiments running
      for proc, log in running.values():
        proc.kill()
        log.close()
  return status


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
  subdirs = {n: os.path.join(workdir, n) for n in names}
  configs = {n: experiments.get(n).get_config(quick=config.quick) for n in names}
  todo = [n for n in names if needs_run(n, configs[n], subdirs[n], config.rerun)]
  workers = config.workers or (min(os.cpu_count() or 1, 4) if jax.default_backend() == "cpu" else 1)
  if workers > 1 and len(todo) > 1 and os.path.exists(RUN_PY):
    todo.sort(key=lambda n: SLOWEST_FIRST.index(n) if n in SLOWEST_FIRST else -1)
    status = _run_in_processes({n: subdirs[n] for n in todo}, config.quick, workers, workdir)
  else:
    status = {n: _run_here(n, configs[n], subdirs[n]) for n in todo}
  rows, sections, provs = [], [], {}
  for name in names:
    module, subdir = experiments.get(name), subdirs[name]
    provs[name] = {"seconds": 0.0, "cpu_seconds": 0.0, **run_info(subdir), "status": status.get(name, "reused")}
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
  cpu = sum(p["cpu_seconds"] for p in provs.values())
  mode = "quick configs" if config.quick else "standard configs"
  summary = (f"{len(rows)} claims from {len(names)} experiments ({mode}): "
             + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ".")
  env = environment()
  table = ledger_table(rows)
  ran = [n for n, p in provs.items() if p["status"] == "ran"]
  timing = (f"This report took {wall:.0f} s ({wall / 60:.1f} min) on {env['devices']} ({env['cpu_cores']} CPU cores), "
            f"running {len(ran)} of {len(names)} experiments, {workers} at a time; the experiments' own run times sum "
            f"to {compute:.0f} s ({compute / 60:.1f} min), their CPU times to {cpu:.0f} s.")
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
