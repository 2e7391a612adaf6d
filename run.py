"""cnnlab command line: `python run.py --exp=NAME [--workdir=DIR] [--config.KEY=VALUE ...]`, or `--list`."""

import sys

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("exp", None, "Experiment to run (see --list).")
flags.DEFINE_string("workdir", None, "Output directory; rerunning in the same one resumes. Default runs/<exp>/<time>.")
flags.DEFINE_bool("list", False, "List the experiments and the claim each tests.")
flags.DEFINE_bool("quick", False, "Use the experiment's quick variant (tiny sizes, for smoke tests).")


def fail(message: str) -> int:
  print(f"error: {message}", file=sys.stderr)
  return 2


def main(argv: list[str]) -> int:
  import experiments  # pylint: disable=g-import-not-at-top
  from cnnlab import runner  # pylint: disable=g-import-not-at-top
  from cnnlab.errors import UserError  # pylint: disable=g-import-not-at-top

  try:
    FLAGS(argv, known_only=True)  # First pass: learn --exp so that its config can be declared.
    if FLAGS.list:
      for name in experiments.names():
        print(f"{name:22s} {experiments.claim(name)}")
      return 0
    if not FLAGS.exp:
      return fail("give an experiment with --exp=NAME (see --list)")
    module = experiments.get(FLAGS.exp)
    config_flags.DEFINE_config_dict("config", module.get_config(quick=FLAGS.quick), lock_config=True)
    FLAGS(argv)
  except flags.Error as e:
    return fail(str(e).splitlines()[0])
  except UserError as e:
    return fail(str(e))

  import jax  # pylint: disable=g-import-not-at-top
  workdir = FLAGS.workdir or runner.default_workdir(FLAGS.exp)
  print(f"cnnlab: {FLAGS.exp} on {jax.device_count()} device(s) {jax.devices()}; workdir {workdir}")
  try:
    runner.run_experiment(module, FLAGS.config, workdir)
  except UserError as e:
    return fail(str(e))
  except KeyboardInterrupt:
    print(f"\nInterrupted. Run the same command with --workdir={workdir} to resume.", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
