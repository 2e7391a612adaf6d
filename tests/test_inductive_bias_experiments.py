"""The five inductive-bias experiments run end to end on their quick configs; verdicts follow from their numbers.

Quick configs share models, input shapes and optimizer settings where they can, so one pytest process
compiles each train step once (see train._jitted_init and train.compiled_steps).
"""

import os

import numpy as np
import pytest

from cnnlab.report import verdicts


@pytest.mark.slow  # 1-2 min each on 2 cores: run by .ci/run after the default suite
def test_translation(run_quick):
  config, r, md, workdir = run_quick("translation")
  for f in ("accuracy_vs_shift.png", "equivariance.png"):
    assert os.path.exists(os.path.join(workdir, f))
  eq = r["equivariance"]
  # Stride-1 circular conv is exactly equivariant at every depth; stride 2 is not for a 1-px shift.
  assert all(np.mean(v) < config.exact_tol for k, v in eq.items() if k.startswith("stride1 / CIRCULAR"))
  assert all(np.mean(v) > 0.05 for k, v in eq.items() if k.startswith("stride2 / CIRCULAR") and "1 px" in k)
  assert r["conv_stride1_circular_exact"]
  robust = r["robustness"]
  expected = verdicts.SUPPORTED if np.mean(robust["cnn_flat"]) >= config.robust_ratio else verdicts.REFUTED
  assert r["verdict_pooling_invariance"] == expected
  for key in ("verdict_equivariance", "verdict_pooling_invariance", "verdict_blurpool_consistency"):
    assert r[key] in md
  assert len(r["records"]) == 5 * config.seeds


@pytest.mark.slow  # 1-2 min each on 2 cores: run by .ci/run after the default suite
def test_spatial_prior(run_quick):
  config, r, md, _ = run_quick("spatial_prior")
  # Quick runs read 8x8 digits as 64-sample signals: logistic = 64 * 10 + 10 parameters.
  assert r["params_1d"]["logistic"] == 650
  assert r["ranking_holds"] == (r["ranking"] == ["cnn", "gru", "mlp", "logistic"])
  assert r["verdict_1d"] in md and r["verdict_2d"] in md
  assert "6,000" in md  # the deviation from the paper is stated
  assert len(r["records"]) == (8 + 4) * config.seeds


@pytest.mark.slow  # 1-2 min each on 2 cores: run by .ci/run after the default suite
def test_pooling(run_quick):
  config, r, md, _ = run_quick("pooling")
  helps = r["pool_beats_none"]
  assert r["verdict_pooling_helps"] == verdicts.from_counts(sum(helps.values()), len(helps))
  assert set(r["image_consistency"]) == set(config.variants)
  assert all(0.0 <= c <= 1.0 for v in r["mnist1d_consistency"].values() for c in v)
  assert r["verdict_pooling_helps"] in md


def test_overfitting(run_quick):
  config, r, md, workdir = run_quick("overfitting")
  for rec in r["records"]:
    assert rec["gap"] == pytest.approx(rec["train_accuracy"] - rec["test_accuracy"])
  below = r["cnn_gap_below_lcn"]
  assert r["verdict_sharing_reduces_overfitting"] == verdicts.from_counts(sum(below.values()), len(below))
  # The shared cell (base width, width_fraction) is trained once.
  assert len(os.listdir(os.path.join(workdir, "trials"))) == 3 * config.seeds * (
      len(config.train_fractions) + len(config.width_multipliers) - 1)
  assert os.path.exists(os.path.join(workdir, "learning_curves.png"))


@pytest.mark.slow  # 1-2 min each on 2 cores: run by .ci/run after the default suite
def test_depth_and_gradients(run_quick):
  from experiments import depth_and_gradients
  config, r, md, _ = run_quick("depth_and_gradients")
  rows = r["init_rows"]
  assert len(rows) == len(config.families) * len(config.variants) * len(config.init_depths) * config.seeds
  assert all(len(row["norms"]) == row["depth"] and min(row["norms"]) > 0 for row in rows)
  cnn_ok, mlp_ok = r["healthy_at_max_depth"]["cnn/plain"], r["healthy_at_max_depth"]["mlp/plain"]
  expected = (depth_and_gradients.UNTESTED if cnn_ok and mlp_ok else
              verdicts.SUPPORTED if cnn_ok else verdicts.REFUTED)
  assert r["verdict_cnns_prevent_vanishing"] == expected
  assert r["verdict_cnns_prevent_vanishing"] in md


def test_block_grad_norms_match_a_direct_gradient(digits):
  import jax
  import optax
  from cnnlab.training import parallel, train
  from experiments import depth_and_gradients
  config = depth_and_gradients.get_config(quick=True)  # the quick run's model and optimizer: no new compile
  depth = config.train_depths[0]
  net = depth_and_gradients._model(config, "mlp", "plain", depth, digits.num_classes)  # pylint: disable=protected-access
  tx = train.make_optimizer(config.train)
  state = train.create_train_state(net, tx, jax.random.key(0), digits.example_shape, parallel.make_mesh())
  x, y = digits.x_train[:config.grad_examples], digits.y_train[:config.grad_examples]
  loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(net.apply({"params": p}, x), y).mean()
  g = jax.grad(loss)(state.params)
  want = [float(optax.tree.norm(jax.tree.map(lambda leaf, i=i: leaf[i], g["blocks"]))) for i in range(depth)]
  np.testing.assert_allclose(depth_and_gradients.block_grad_norms(state, depth, x, y), want, rtol=1e-5)
