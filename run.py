"""cnnlab command line: `python run.py --exp=NAME [--workdir=DIR] [--config.KEY=VALUE ...]`, `--report`, `--list`."""

import errno
import re
import sys

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("exp", None, "Experiment to run (see --list).")
flags.DEFINE_bool("report", False, "Run every experiment whose results are missing or stale and write REPORT.md "
                  "(--config.experiments, --config.readme, --config.rerun, --config.workers).")
flags.DEFINE_string("workdir", None, "Output directory; rerunning in the same one resumes. Default runs/<exp>/<time>, "
                    "or runs/report[-quick] for --report.")
flags.DEFINE_bool("list", False, "List the experiments and the claim each tests.")
flags.DEFINE_bool("quick", False, "Use the quick variant (tiny sizes, for smoke tests); with --report, of every "
                  "experiment.")
flags.DEFINE_bool("distributed", False, "Multi-process run: call jax.distributed.initialize() (auto-detects TPU pods, "
                  "SLURM, Open MPI; or give the three flags below).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for --distributed without auto-detection.")
flags.DEFINE_integer("num_processes", None, "Number of processes, for --distributed without auto-detection.")
flags.DEFINE_integer("process_id", None, "This process's index, for --distributed without auto-detection.")


def one_line(message: str, longest: int = 200) -> str:
  """`message` on one line, every run of more than `longest` characters without a space cut in the middle."""
  def cut(m):
    word = m.group()
    return f"{word[:longest // 2]}...({len(word)} chars)...{word[-20:]}"
  return re.sub(rf"\S{{{longest + 1},}}", cut, " ".join(message.split()))


def fail(message: str, code: int = 2) -> int:
  print(f"error: {one_line(message)}", file=sys.stderr)
  return code


def check_config_keys(argv: list[str], config, name: str) -> None:
  """Rejects `--config.KEY=...` for a KEY the experiment's config does not declare (with a suggestion)."""
  import difflib  # pylint: disable=g-import-not-at-top
  from cnnlab.errors import UserError  # pylint: disable=g-import-not-at-top

  def paths(c, prefix=""):
    for k, v in c.items():
      yield f"{prefix}{k}"
      if hasattr(v, "items"):
        yield from paths(v, f"{prefix}{k}.")

  known = set(paths(config))
  for arg in argv[1:]:
    if arg.startswith("--config."):
      key = arg[len("--config."):].split("=", 1)[0]
      if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean --config.{close[0]}?" if close else "; see --list and the experiment's get_config()"
        raise UserError(f"unknown config field {key!r} for {name}{hint}")


def _fits(got, want) -> bool:
  """True if `got` may stand where the default `want` is (an int may stand for a float, a bool for nothing else)."""
  if isinstance(want, bool) or isinstance(got, bool):
    return isinstance(got, bool) and isinstance(want, bool)
  if isinstance(want, float):
    return isinstance(got, (int, float))
  return isinstance(got, type(want))


def check_config_types(default, parsed, prefix: str = "") -> None:
  """Rejects overrides whose type differs from the declared default's, element by element for tuples.

  ml_collections checks a field's top-level type, but `--config.fractions=nan` still parses to the tuple `('nan',)`.
  """
  from cnnlab.errors import UserError  # pylint: disable=g-import-not-at-top
  for key, want in default.items():
    got, name = parsed[key], f"{prefix}{key}"
    if hasattr(want, "items"):
      check_config_types(want, got, f"{name}.")
    elif isinstance(want, (tuple, list)) and want:
      if not isinstance(got, (tuple, list)) or not all(any(_fits(g, w) for w in want) for g in got):
        raise UserError(f"--config.{name} must be a tuple like {tuple(want)!r}, got {got!r}")
    elif want is not None and got is not None and not _fits(got, want):
      raise UserError(f"--config.{name} must be a {type(want).__name__} like {want!r}, got {got!r}")


def main(argv: list[str]) -> int:
  from cnnlab.report import workers  # pylint: disable=g-import-not-at-top
  from cnnlab.runtime import xla_flags  # pylint: disable=g-import-not-at-top
  workers.bind_to_parent()  # a report's worker never outlives the report
  xla_flags.apply()  # before anything imports JAX: XLA reads $XLA_FLAGS once
  import experiments  # pylint: disable=g-import-not-at-top
  from cnnlab import runner  # pylint: disable=g-import-not-at-top
  from cnnlab.errors import UserError  # pylint: disable=g-import-not-at-top
  from cnnlab.report import build  # pylint: disable=g-import-not-at-top

  try:
    FLAGS(argv, known_only=True)  # First pass: learn --exp so that its config can be declared.
    if FLAGS.list:
      for name in experiments.names():
        print(f"{name:22s} {experiments.claim(name)}")
      return 0
    if FLAGS.workdir is not None and not FLAGS.workdir.strip():
      return fail("--workdir is empty; give a directory, or leave the flag out for the default")
    if FLAGS.report == bool(FLAGS.exp):
      return fail("give an experiment with --exp=NAME (see --list), or --report" if not FLAGS.report
                  else "give either --exp=NAME or --report, not both")
    module = None if FLAGS.report else experiments.get(FLAGS.exp)
    get_config = build.get_config if FLAGS.report else module.get_config
    check_config_keys(argv, get_config(quick=FLAGS.quick), f"experiment {FLAGS.exp!r}" if module else "the report")
    config_flags.DEFINE_config_dict("config", get_config(quick=FLAGS.quick), lock_config=True)
    FLAGS(argv)
    check_config_types(get_config(quick=FLAGS.quick), FLAGS.config)
    # Everything checkable is checked before the disk is touched: a refused command leaves no trace.
    if FLAGS.report:
      build.validate(FLAGS.config)
    else:
      runner.validate(module, FLAGS.config)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    return fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
  except UserError as e:
    return fail(str(e))
  return execute(module, argv)


def execute(module, argv: list[str]) -> int:
  """Runs the validated experiment (or the report) in its workdir; a resume hint on interruption."""
  import jax  # pylint: disable=g-import-not-at-top
  from cnnlab import runner  # pylint: disable=g-import-not-at-top
  from cnnlab.errors import Preempted, TrainingDiverged, UserError  # pylint: disable=g-import-not-at-top
  from cnnlab.report import build  # pylint: disable=g-import-not-at-top
  from cnnlab.runtime import compile_cache  # pylint: disable=g-import-not-at-top
  from cnnlab.training import parallel, preemption  # pylint: disable=g-import-not-at-top
  cache = compile_cache.enable()  # reruns load compiled steps from disk ($CNNLAB_JAX_CACHE=off disables)
  preemption.install()  # from here on, SIGTERM/SIGINT checkpoint at the next step instead of killing
  if FLAGS.distributed or FLAGS.coordinator_address:
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  name = "report" if FLAGS.report else FLAGS.exp
  if FLAGS.workdir:
    workdir = FLAGS.workdir
  else:
    workdir = build.default_workdir(FLAGS.config) if FLAGS.report else runner.default_workdir(FLAGS.exp)
  print(f"cnnlab: {name} on {jax.device_count()} device(s) {jax.devices()} "
        f"(process {jax.process_index()} of {jax.process_count()}); workdir {workdir}; compile cache {cache or 'off'}")
  resume = " ".join(["python", *argv] + ([] if FLAGS.workdir else [f"--workdir={workdir}"]))
  try:
    if FLAGS.report:
      build.run_report(FLAGS.config, workdir)
    else:
      runner.run_experiment(module, FLAGS.config, workdir)
  except UserError as e:
    return fail(str(e))
  except TrainingDiverged as e:
    return fail(str(e), code=1)
  except Preempted as e:
    print(f"Stopped by signal {e.signum} at step {e.step} ({e.workdir}); checkpoint saved. Resume with: {resume}",
          file=sys.stderr)
    return 128 + e.signum
  except KeyboardInterrupt:
    print(f"\nInterrupted. Resume from the last checkpoint with: {resume}", file=sys.stderr)
    return 130
  except OSError as e:
    if e.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
      raise
    return fail(f"no space left on the device holding {e.filename or workdir!r} ({e.strerror}); free some and "
                f"rerun the same command to resume", code=1)
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main(sys.argv))
  except BrokenPipeError:  # e.g. `python run.py --list | head`
    sys.exit(0)
