"""Seeds as a batch axis: a seeded training equals its single-seed fits, resumes exactly, and sweeps group by it."""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import data, kernels, models
from cnnlab.errors import Preempted, TrainingDiverged
from cnnlab.report import rendering as reporting
from cnnlab.training import loop, seeds as seeds_lib, steps, sweep, train
from cnnlab.training.metric_writer import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Seeded vs single-seed: the vmapped ops sum in another order, so float32 rounding differs; over 8 Adam steps of
# these tiny nets params moved apart by ~1e-7 and metrics by ~1e-7 relative.
RTOL, ATOL = 1e-5, 1e-6
SEEDS = (3, 5)


def cnn():
  return models.create("cnn", features=(4, 8))


def mlp():
  return models.create("mlp", hidden=(16,))


def params_of(state):
  return jax.tree.map(np.asarray, jax.device_get(state.params))


def assert_close_trees(a, b, rtol=RTOL, atol=ATOL):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def assert_close_metrics(a_dir, b_dir):
  a, b = read_metrics(str(a_dir)), read_metrics(str(b_dir))
  assert [sorted(r) for r in a] == [sorted(r) for r in b]
  for ra, rb in zip(a, b):
    np.testing.assert_allclose([ra[k] for k in sorted(ra)], [rb[k] for k in sorted(rb)], rtol=RTOL, atol=ATOL)


def subsets(digits, fraction=0.5):
  return [data.subsample(digits, fraction, s) for s in SEEDS]


@pytest.mark.parametrize("make,fraction,device_data,batching", [
    (cnn, 0.5, True, "vmap"), (mlp, 1.0, True, "vmap"), (mlp, 0.5, False, "vmap"), (cnn, 0.5, True, "map")])
def test_each_seed_equals_its_single_seed_fit(digits, tiny_train_config, tmp_path, make, fraction, device_data,
                                              batching):
  tiny_train_config.device_data, tiny_train_config.seed_batching = device_data, batching
  sets = subsets(digits, fraction)  # fraction 1.0: every seed the same arrays (kept once on the device)
  states, summaries = train.fit_seeds(tiny_train_config, make(), sets, [str(tmp_path / f"s{s}") for s in SEEDS],
                                      SEEDS)
  assert [int(s.step) for s in states] == [tiny_train_config.steps] * len(SEEDS)
  for i, seed in enumerate(SEEDS):
    state, summary = train.fit(tiny_train_config, make(), sets[i], str(tmp_path / f"single{seed}"), seed)
    assert summaries[i].keys() == summary.keys() and summaries[i]["params"] == summary["params"]
    np.testing.assert_allclose([summaries[i][k] for k in summary], [summary[k] for k in summary], rtol=RTOL, atol=ATOL)
    assert_close_trees(params_of(states[i]), params_of(state))
    assert_close_metrics(tmp_path / f"s{seed}", tmp_path / f"single{seed}")
    assert reporting.read_json(str(tmp_path / f"s{seed}" / loop.SUMMARY)) == summaries[i]
  assert summaries[0] != summaries[1]  # the seeds really differ


def test_seeded_resume_is_exact_and_a_single_rerun_restores_it(digits, tiny_train_config, tmp_path):
  sets = subsets(digits)
  dirs = lambda name: [str(tmp_path / name / f"s{s}") for s in SEEDS]
  full, full_sums = train.fit_seeds(tiny_train_config, cnn(), sets, dirs("full"), SEEDS)
  half = tiny_train_config.copy_and_resolve_references()
  half.steps = tiny_train_config.steps // 2
  train.fit_seeds(half, cnn(), sets, dirs("cut"), SEEDS)
  resumed, sums = train.fit_seeds(tiny_train_config, cnn(), sets, dirs("cut"), SEEDS)
  assert sums == full_sums
  for i, _ in enumerate(SEEDS):
    jax.tree.map(np.testing.assert_array_equal, params_of(resumed[i]), params_of(full[i]))
    loss = lambda d: [(r["step"], r["train_loss"]) for r in read_metrics(d) if "train_loss" in r]
    assert loss(dirs("cut")[i]) == loss(dirs("full")[i])
  # Finished: a single-seed fit (as a later rerun or report does) restores the seed's run, trains nothing.
  lines = len(read_metrics(dirs("full")[1]))
  state, summary = train.fit(tiny_train_config, cnn(), sets[1], dirs("full")[1], SEEDS[1])
  assert summary == full_sums[1] and len(read_metrics(dirs("full")[1])) == lines
  jax.tree.map(np.testing.assert_array_equal, params_of(state), params_of(full[1]))
  again, again_sums = train.fit_seeds(tiny_train_config, cnn(), sets, dirs("full"), SEEDS)  # finished group
  assert again_sums == full_sums and len(read_metrics(dirs("full")[1])) == lines


@pytest.mark.parametrize("kill_at", [3, 6])
def test_sigterm_checkpoints_every_seed_and_resume_is_exact(digits, tiny_train_config, tmp_path, kill_at,
                                                            monkeypatch):
  cfg = tiny_train_config
  sets = subsets(digits)
  dirs = lambda name: [str(tmp_path / name / f"s{s}") for s in SEEDS]
  full, _ = train.fit_seeds(cfg, mlp(), sets, dirs("full"), SEEDS)
  real = seeds_lib.program

  def signalling_program(*args):
    step_fn, inputs = real(*args)

    def signalling():
      for n, step_inputs in enumerate(inputs, 1):
        if n == kill_at:
          os.kill(os.getpid(), signal.SIGTERM)
        yield step_inputs

    return steps.Program(step_fn, signalling())

  monkeypatch.setattr(seeds_lib, "program", signalling_program)
  with pytest.raises(Preempted) as e:
    train.fit_seeds(cfg, mlp(), sets, dirs("cut"), SEEDS)
  assert e.value.step == kill_at
  monkeypatch.setattr(seeds_lib, "program", real)
  resumed, _ = train.fit_seeds(cfg, mlp(), sets, dirs("cut"), SEEDS)
  for i, _ in enumerate(SEEDS):
    jax.tree.map(np.testing.assert_array_equal, params_of(resumed[i]), params_of(full[i]))
    assert read_metrics(dirs("cut")[i]) == read_metrics(dirs("full")[i])
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_diverging_seed_is_named(digits, tiny_train_config, tmp_path):
  sets = subsets(digits)
  # Finite inputs whose products overflow float32: seed index 1's loss is NaN from its first step.
  sets[1] = dataclasses.replace(sets[1], x_train=sets[1].x_train * np.float32(3e38))
  tiny_train_config.checkpoint_every, tiny_train_config.log_every = 1, 1
  with pytest.raises(TrainingDiverged, match=r"diverged at step 1 \(.*nan in seed index 1 \(seed 5,"):
    train.fit_seeds(tiny_train_config, mlp(), sets, [str(tmp_path / f"s{s}") for s in SEEDS], SEEDS)


def test_unequal_sets_fall_back_to_single_fits(digits, tiny_train_config, tmp_path):
  sets = [data.subsample(digits, 0.5, 3), data.subsample(digits, 0.6, 5)]
  assert not seeds_lib.stackable(sets)
  states, summaries = train.fit_seeds(tiny_train_config, mlp(), sets, [str(tmp_path / "a"), str(tmp_path / "b")],
                                      SEEDS)
  single, summary = train.fit(tiny_train_config, mlp(), sets[1], str(tmp_path / "c"), SEEDS[1])
  assert summaries[1] == summary  # the very same program: equal, not just close


def test_run_trials_groups_seeds_and_keeps_order(digits, tiny_train_config, tmp_path):
  nets = {"cnn": cnn(), "mlp": mlp()}
  shapes = []

  def after(state, ds):
    shapes.append(params_of(state)["head"]["kernel"].shape)
    return {"n": len(ds.x_train)}

  trials = [sweep.Trial(f"{name}_s{seed}", net, data.subsample(digits, 0.5, seed), seed, tiny_train_config,
                        {"model": name}, after_fit=after)
            for seed in (0, 1, 2) for name, net in nets.items()]  # as weight_sharing orders them
  tiny_train_config.seed_group = 2
  assert sweep.seed_groups(str(tmp_path / "g"), trials) == [[0, 2], [1, 3], [4], [5]]
  grouped = sweep.run_trials(str(tmp_path / "g"), trials, progress=False)
  assert all(len(s) == 2 for s in shapes)  # after_fit saw unstacked states
  assert sweep.seed_groups(str(tmp_path / "g"), trials) == [[i] for i in range(6)]  # finished: restored one by one
  assert sweep.run_trials(str(tmp_path / "g"), trials, progress=False) == grouped
  tiny_train_config.seed_group = 1
  assert sweep.seed_groups(str(tmp_path / "s"), trials) == [[i] for i in range(6)]
  single = sweep.run_trials(str(tmp_path / "s"), trials, progress=False)
  assert [(r["model"], r["seed"]) for r in grouped] == [(t.tags["model"], t.seed) for t in trials]
  for g, s in zip(grouped, single):
    assert g.keys() == s.keys()
    np.testing.assert_allclose([g[k] for k in s if k != "model"], [s[k] for k in s if k != "model"],
                               rtol=RTOL, atol=ATOL)


# Kernels under vmap: per-registered-model overrides and an input shape (batch first), as test_kernels_specialise.
VMAP_CASES = {
    "cnn": (dict(features=(4, 8)), (4, 8, 8, 1)),
    "cnn_valid": (dict(features=(4, 8), padding="VALID", pool="avg"), (4, 10, 10, 1)),  # conv_grads' custom VJP
    "lcn": (dict(features=(3, 4)), (4, 8, 8, 1)),
    "mlp": (dict(hidden=(8,)), (4, 6, 6, 1)),
    "poolnet": (dict(features=(3,), downsample="maxblur"), (4, 8, 8, 1)),
    "segnet": (dict(features=(3, 4)), (4, 8, 8, 1)),  # transposed convs
    "lenet5": ({}, (2, 28, 28, 1)),
}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the kernels run on the CPU backend only")
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "lenet5" else n for n in VMAP_CASES])
@pytest.mark.usefixtures("classic_threefry")  # fast-compiling draws (conftest)
def test_kernels_under_vmap_equal_a_loop_over_seeds(name):
  kwargs, shape = VMAP_CASES[name]
  model = kernels.specialise(models.create(name.split("_")[0], **kwargs), "auto")
  n_seeds = 3
  keys = jax.random.split(jax.random.key(0), n_seeds)
  xs = jax.random.normal(jax.random.key(1), (n_seeds, *shape))
  params = jax.jit(jax.vmap(lambda k, x: model.init(k, x[:1])))(keys, xs)  # jitted: eager ops compile one by one
  weights = jax.random.normal(jax.random.key(2), jax.eval_shape(model.apply, jax.tree.map(lambda p: p[0], params),
                                                                xs[0]).shape)

  def value_and_grad(p, x):
    return jax.value_and_grad(lambda p: jnp.sum(model.apply(p, x) * weights))(p)

  batched = jax.jit(jax.vmap(value_and_grad))(params, xs)
  one = jax.jit(value_and_grad)
  for i in range(n_seeds):
    value, grads = one(jax.tree.map(lambda p, i=i: p[i], params), xs[i])
    np.testing.assert_allclose(batched[0][i], value, rtol=1e-5, atol=1e-5)
    # Float32 rounding of sums in another order: relative to each gradient's largest entry.
    jax.tree.map(lambda b, g, i=i: np.testing.assert_allclose(b[i], g, rtol=0, atol=1e-5 * max(1, np.abs(g).max())),
                 batched[1], grads)


SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    from jax.sharding import PartitionSpec as P
    from cnnlab import data, models
    from cnnlab.training import train
    assert jax.device_count() == 8, jax.devices()
    c = data.get_config(); c.name = "digits"
    ds = data.load(c)
    cfg = train.get_config()
    cfg.update(dict(steps=6, batch_size=32, eval_batch_size=200, log_every=2, checkpoint_every=3, progress=False,
                    tensorboard=False, seed_devices=2))
    seeds = [int(s) for s in sys.argv[3].split(",")]
    sets = [data.subsample(ds, 0.5, s) for s in seeds]
    # Watch the stacked state's sharding through the seeded program.
    from cnnlab.training import seeds as seeds_lib
    real = seeds_lib.program
    def spy(config, datasets, seeds_, start, mesh):
      assert dict(mesh.shape) == {"seed": 2, "data": 4}, mesh.shape
      return real(config, datasets, seeds_, start, mesh)
    seeds_lib.program = spy
    states, summaries = train.fit_seeds(cfg, models.create("cnn", features=(4, 8)), sets,
                                        [f"{sys.argv[1]}/s{s}" for s in seeds], seeds)
    flat = {}
    for i, st in enumerate(states):
      for k, v in __import__("flax").traverse_util.flatten_dict(jax.device_get(st.params)).items():
        flat[f"{i}/" + "/".join(k)] = np.asarray(v)
    np.savez(sys.argv[2], test_loss=[s["test_loss"] for s in summaries], **flat)
""")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="compares simulated CPU devices with this CPU process")
def test_eight_devices_seed_and_data_axes_match_one(digits, tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = tmp_path / "multi.npz"
  seeds = (3, 5, 7, 9)
  # A timeout: a collective deadlock must fail this test, not hang the suite.
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "multi"), str(out), ",".join(map(str, seeds))],
                        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  import flax  # pylint: disable=g-import-not-at-top
  cfg = train.get_config()
  cfg.update(dict(steps=6, batch_size=32, eval_batch_size=200, log_every=2, checkpoint_every=3, progress=False,
                  tensorboard=False))
  sets = [data.subsample(digits, 0.5, s) for s in seeds]
  states, summaries = train.fit_seeds(cfg, cnn(), sets, [str(tmp_path / f"one{s}") for s in seeds], seeds)
  multi = np.load(out)
  for i, st in enumerate(states):
    for k, v in flax.traverse_util.flatten_dict(jax.device_get(st.params)).items():
      np.testing.assert_allclose(multi[f"{i}/" + "/".join(k)], v, atol=1e-5, err_msg=str(k))
  np.testing.assert_allclose(multi["test_loss"], [s["test_loss"] for s in summaries], atol=1e-5)


def test_seed_group_zero_is_one_on_cpu_and_a_group_on_accelerators(tiny_train_config):
  tiny_train_config.seed_group = 0
  assert train.seed_group(tiny_train_config, "cpu") == 1
  assert train.seed_group(tiny_train_config, "gpu") == train.AUTO_SEED_GROUP > 1
  tiny_train_config.seed_group = 4
  assert train.seed_group(tiny_train_config, "cpu") == 4
