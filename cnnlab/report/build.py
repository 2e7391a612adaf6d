"""The report: runs every experiment whose results are missing or stale, then writes REPORT.md from results on disk.

Each experiment runs in `<workdir>/<name>/`; a finished one is reused while its provenance (config, code, library
versions) matches, and moved aside to `<name>.stale-<time>` otherwise. An interrupted report resumes: finished
experiments are reused and an interrupted one continues from its checkpoints.

Command:  python run.py --report            (standard configs, workdir runs/report)
          python run.py --report --quick    (every experiment's quick config, runs/report-quick)
          python run.py --report --config.experiments=param_count,weight_sharing --config.readme=README.md
          python run.py --report --config.seed_base=1000 --config.compare_to=runs/report/report.json
                                            (a disjoint seed set, runs/report-seeds1000; verdicts that differ
                                             between the two reports are marked unstable)
"""

import os
import sys
import time

import ml_collections

import experiments
from cnnlab import runner, workdir as workdirs
from cnnlab.errors import TrainingDiverged, UserError
from cnnlab.report import ledger, render, rendering, workers as workers_lib

RUN_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "run.py")


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.quick = quick          # run every experiment's quick config (tiny sizes) instead of its standard one
  c.experiments = ""       # comma-separated experiments to include; '' means every one that declares CLAIMS
  c.rerun = False          # re-run every included experiment even if its results are current
  c.readme = ""            # if set, refresh that README's ledger and experiment-table blocks
  c.workers = 0            # experiments at once, each its own run.py process; 0: one per CPU core (at most 4) on
                           # a CPU backend, where one XLA process uses ~1 core on these small nets; 1 elsewhere
  c.seed_base = 0          # first seed of every seeded experiment; e.g. 1000 draws a seed set disjoint from 0's
  c.compare_to = ""        # report.json of a report on another seed set: each claim shows both verdicts, and one
                           # whose verdicts differ is marked unstable (REPORT.md, README ledger)
  return c


def default_workdir(config: ml_collections.ConfigDict) -> str:
  """A fixed workdir per mode and seed set, so that running the report again reuses what is already measured."""
  name = "report-quick" if config.quick else "report"
  return os.path.join("runs", name + (f"-seeds{config.seed_base}" if config.seed_base else ""))


def experiment_config(name: str, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config the report runs `name` with: quick or standard, on the report's seed set where it is seeded."""
  c = experiments.get(name).get_config(quick=config.quick)
  if "seed_base" in c:
    c.seed_base = config.seed_base
  return c


def _overrides(c: ml_collections.ConfigDict) -> list[str]:
  """The run.py flags that give an experiment's process `experiment_config` (beyond --quick)."""
  return [f"--config.seed_base={c.seed_base}"] if "seed_base" in c and c.seed_base else []


def command(config: ml_collections.ConfigDict) -> str:
  """The command line that makes this report (as REPORT.md and the README cite it)."""
  return ("python run.py --report" + (" --quick" if config.quick else "")
          + (f" --config.seed_base={config.seed_base}" if config.seed_base else "")
          + (f" --config.compare_to={config.compare_to}" if config.compare_to else "")
          + (f" --config.readme={config.readme}" if config.readme else ""))


def selected(config: ml_collections.ConfigDict) -> list[str]:
  """The experiments the report covers, in ledger order."""
  with_claims = [n for n in experiments.names() if getattr(experiments.get(n), "CLAIMS", None)]
  wanted = [n.strip() for n in config.experiments.split(",") if n.strip()]
  unknown = sorted(set(wanted) - set(with_claims))
  if unknown:
    raise UserError(f"report: no experiment with claims called {', '.join(unknown)}; choose from "
                    f"{', '.join(with_claims)}")
  return [n for n in with_claims if n in wanted] if wanted else with_claims


def validate(config: ml_collections.ConfigDict) -> list[str]:
  """Everything checkable before a minute is spent or a file written; returns the experiments selected."""
  names = selected(config)
  if config.workers < 0:
    raise UserError(f"report: workers must be >= 0, got {config.workers}")
  if config.readme:
    try:
      with open(config.readme, encoding="utf-8") as f:
        text = f.read()
    except OSError as e:
      raise UserError(f"report: cannot read README {config.readme!r}: {e.strerror}") from None
    if render.README_BEGIN not in text or render.README_END not in text:
      raise UserError(f"report: {config.readme!r} has no {render.README_BEGIN} ... {render.README_END} block to fill")
  if config.seed_base < 0:
    raise UserError(f"report: seed_base must be >= 0, got {config.seed_base}")
  if config.compare_to:
    other = _read_report(config.compare_to)
    if other.get("quick", False) != config.quick:
      raise UserError(f"report: {config.compare_to!r} is a {'quick' if other.get('quick') else 'standard'} report; "
                      "compare reports of the same mode")
  for name in names:
    runner.validate(experiments.get(name), experiment_config(name, config))
  return names


def _read_report(path: str) -> dict:
  """A report.json (a one-line `UserError` if it is missing or not one)."""
  try:
    report = rendering.read_json(path)
  except (OSError, ValueError) as e:
    raise UserError(f"report: cannot read {path!r} as a report.json ({type(e).__name__})") from None
  if not isinstance(report, dict) or not isinstance(report.get("claims"), list):
    raise UserError(f"report: {path!r} is not a report.json (no claims list)")
  return report


def last_seconds(subdir: str) -> float | None:
  """The recorded run time of the run in `subdir` (None if it never finished)."""
  info = workdirs.read_record(os.path.join(subdir, "run_info.json")) if os.path.isdir(subdir) else None
  return (info or {}).get("seconds")


def run_order(names: list[str], seconds: dict[str, float | None]) -> list[str]:
  """Slowest first by last recorded run time, so that short ones fill the gaps at the end; untimed ones first."""
  return sorted(names, key=lambda n: -(seconds.get(n) if seconds.get(n) is not None else float("inf")))


def _run_here(name: str, config: ml_collections.ConfigDict, subdir: str) -> str:
  print(f"report: running {name} in {subdir}")
  try:
    runner.run_experiment(experiments.get(name), config, subdir, strict=False)
    return "ran"
  except (UserError, TrainingDiverged) as e:  # one failed experiment leaves its claims "not measured"
    print(f"report: {name} failed: {e}", file=sys.stderr)
    return f"failed: {e}"


def _check_mode(workdir: str, quick: bool) -> None:
  saved = workdirs.read_record(os.path.join(workdir, "report.json"))
  if saved is not None and saved.get("quick", quick) != quick:
    kind = "quick" if saved["quick"] else "standard"
    raise UserError(f"workdir {workdir!r} holds a {kind} report; use another --workdir")


def run_report(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs what is missing or stale, writes `<workdir>/REPORT.md` and report.json; returns report.json's content."""
  import jax  # pylint: disable=g-import-not-at-top
  start = time.time()
  names = validate(config)
  with workdirs.claim(workdir):
    _check_mode(workdir, config.quick)
    subdirs = {n: os.path.join(workdir, n) for n in names}
    configs = {n: experiment_config(n, config) for n in names}
    seconds = {n: last_seconds(subdirs[n]) for n in names}
    why = {n: runner.plan(experiments.get(n), configs[n], subdirs[n], config.rerun) for n in names}
    todo = [n for n in names if why[n]]
    for n in todo:
      print(f"report: {n}: {why[n]}")
    workers = config.workers or (min(os.cpu_count() or 1, 4) if jax.default_backend() == "cpu" else 1)
    if workers > 1 and len(todo) > 1 and os.path.exists(RUN_PY):
      logs = os.path.join(workdir, "logs")
      os.makedirs(logs, exist_ok=True)
      commands = {n: ([sys.executable, RUN_PY, f"--exp={n}", f"--workdir={subdirs[n]}",
                       *(["--quick"] if config.quick else []), *_overrides(configs[n])], os.path.join(logs, f"{n}.txt"))
                  for n in run_order(todo, seconds)}
      status = workers_lib.run_all(commands, workers, workdir)
    else:
      status = {n: _run_here(n, configs[n], subdirs[n]) for n in todo}
    return _write(config, workdir, names, subdirs, status, workers, time.time() - start)


def compare(rows: list[dict], other: dict) -> None:
  """Adds to each row the verdict `other` (a report on another seed set) gave its claim, and whether they agree:
  "stable" True or False, or None where either report has no verdict to compare (not measured, smoke test)."""
  theirs = {r.get("id"): r.get("verdict") for r in other["claims"]}
  for r in rows:
    r["other_verdict"] = theirs.get(r["id"], ledger.NOT_MEASURED)
    compared = r["verdict"] in ledger.VERDICTS and r["other_verdict"] in ledger.VERDICTS
    r["stable"] = r["other_verdict"] == r["verdict"] if compared else None


def _write(config, workdir, names, subdirs, status, workers, wall) -> dict:
  """REPORT.md, report.json and (if asked) the README blocks, from the results on disk."""
  rows, sections, provs, claims = [], [], {}, {}
  for name in names:
    module, subdir = experiments.get(name), subdirs[name]
    info = workdirs.read_record(os.path.join(subdir, "run_info.json")) if os.path.isdir(subdir) else None
    provs[name] = {"seconds": 0.0, "cpu_seconds": 0.0, **(info or {}), "status": status.get(name, "reused")}
    results_path = os.path.join(subdir, "results.json")
    results = rendering.read_json(results_path) if os.path.exists(results_path) else None
    for claim in module.CLAIMS:
      finding = claim.assess(results)
      rows.append({"id": claim.id, "text": claim.text, "source": claim.source, "experiment": name,
                   "metric": claim.describe_rule(), "figure": finding.figure, "verdict": finding.verdict})
    claims[name] = experiments.claim(name)
    sections.append(render.section(name, claims[name], subdir, provs[name]))
  if config.compare_to:
    compare(rows, _read_report(config.compare_to))
  counts = {v: sum(r["verdict"] == v for r in rows) for v in (*ledger.VERDICTS, ledger.SMOKE_TEST,
                                                               ledger.NOT_MEASURED)}
  unstable = sum(r.get("stable") is False for r in rows)
  uncompared = sum("stable" in r and r["stable"] is None for r in rows)
  compute = sum(p["seconds"] for p in provs.values())
  cpu = sum(p["cpu_seconds"] for p in provs.values())
  mode = "quick configs" if config.quick else "standard configs"
  summary = (f"{len(rows)} claims from {len(names)} experiments ({mode}): "
             + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + "."
             + (f" Against the seed set of {config.compare_to}: {unstable} unstable"
                + (f", {uncompared} without a verdict on one of them" if uncompared else "") + "."
                if config.compare_to else ""))
  env = render.environment()
  ran = [n for n, p in provs.items() if p["status"] == "ran"]
  timing = (f"This report took {wall:.0f} s ({wall / 60:.1f} min) on {env['devices']} ({env['cpu_cores']} CPU cores), "
            f"running {len(ran)} of {len(names)} experiments, {workers} at a time; the experiments' own run times sum "
            f"to {compute:.0f} s ({compute / 60:.1f} min), their CPU times to {cpu:.0f} s.")
  md = render.report_markdown(rows, sections, provs, env, summary, timing, command(config))
  with open(os.path.join(workdir, "REPORT.md"), "w", encoding="utf-8") as f:
    f.write(md)
  report = {"claims": rows, "counts": counts, "experiments": provs, "environment": env, "seconds": wall,
            "experiment_seconds": compute, "quick": config.quick}
  rendering.write_json(os.path.join(workdir, "report.json"), report)
  if config.readme:
    render.update_readme(config.readme, render.ledger_table(rows), summary,
                         render.experiments_table(provs, claims, config.quick), command(config))
  print(f"report: {summary} {timing}\nReport: {os.path.join(workdir, 'REPORT.md')}")
  return report
