"""Segmentation and localisation: decoder shapes from the conv arithmetic, IoU vs independent references,
canvas generator, targets in Dataset and losses, sampling errors and checkerboard shares, the judges on synthetic
results, learning-rate tuning, and both experiments end to end beating the trivial baseline."""

import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, jaccard_score

from cnnlab import data, models
from cnnlab.data import canvas
from cnnlab.metrics import boxes, sampling, segmentation as segmentation_metrics, spectral
from cnnlab.ops import conv_arithmetic as ca
from cnnlab.report import ledger, verdicts
from cnnlab.training import losses, tuning
from cnnlab.errors import UserError
from cnnlab.models import segnets


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_upsampling_geometry_doubles_every_size(k):
  p, a = segnets.upsampling_transpose_geometry(k, 2)
  up = segnets.Upsample(3, "transposed", k)
  for i in range(1, 9):
    assert ca.conv_transpose_output_size(i, k, 2, p, a) == 2 * i
    out = jax.eval_shape(lambda x: up.init_with_output(jax.random.key(0), x)[0],  # noqa: B023
                         jax.ShapeDtypeStruct((1, i, i + 1, 2), jnp.float32))
    assert out.shape == (1, 2 * i, 2 * (i + 1), 3)


@pytest.mark.parametrize("name,up_kernel", [("segnet", 3), ("segnet", 2), ("segnet_resize", 3), ("unet", 4)])
def test_decoder_shapes_follow_the_conv_arithmetic(name, up_kernel):
  from cnnlab.ops import analysis
  net = models.create(name, features=(4, 8, 8), up_kernel=up_kernel, num_classes=5)
  shapes = {r["layer"]: r["shape"] for r in analysis.activation_table(net, (1, 16, 24, 1))}
  hw = [(16, 24)]
  for _ in range(2):  # 2x2 max pool, stride 2, before encoder stages 1 and 2 (3x3 SAME convs keep the size)
    hw.append(tuple(ca.conv_output_size(s, 2, 2) for s in hw[-1]))
  for i, width in enumerate((4, 8, 8)):
    assert shapes[f"enc{i}"] == (*hw[i], width)
  p, a = segnets.upsampling_transpose_geometry(up_kernel, 2)
  for i in (1, 0):  # coarse to fine: up{i} takes stage i + 1's size to stage i's
    want = tuple(ca.conv_transpose_output_size(s, up_kernel, 2, p, a) for s in hw[i + 1])
    assert want == hw[i] and shapes[f"up{i}"] == (*want, (4, 8)[i]) and shapes[f"dec{i}"] == (*want, (4, 8)[i])
  assert shapes["classifier"] == (16, 24, 5)


def test_sides_that_do_not_halve_are_a_user_error():
  with pytest.raises(UserError, match="divide by 4"):
    models.create("segnet").init(jax.random.key(0), jnp.zeros((1, 18, 16, 1)))


def test_mean_iou_and_pixel_accuracy_match_sklearn():
  rng = np.random.default_rng(0)
  y_true = rng.choice(6, size=(4, 9, 7), p=[0.7, 0.1, 0.1, 0.1, 0.0, 0.0])  # classes 4, 5 never true
  y_pred = np.where(rng.random(y_true.shape) < 0.6, y_true, rng.choice([0, 1, 2, 5], size=y_true.shape))
  conf = segmentation_metrics.confusion_matrix(y_true, y_pred, 6)
  t, p = y_true.ravel(), y_pred.ravel()
  np.testing.assert_allclose(segmentation_metrics.mean_iou(conf), jaccard_score(t, p, average="macro"), rtol=1e-12)
  per_class = jaccard_score(t, p, labels=[0, 1, 2, 3, 5], average=None)
  np.testing.assert_allclose(segmentation_metrics.iou_per_class(conf)[[0, 1, 2, 3, 5]], per_class, rtol=1e-12)
  assert np.isnan(segmentation_metrics.iou_per_class(conf)[4])  # neither present nor predicted
  assert segmentation_metrics.pixel_accuracy(conf) == pytest.approx(accuracy_score(t, p))


def _raster(box, size=12):
  m = np.zeros((size, size), bool)
  m[box[0]:box[2], box[1]:box[3]] = True
  return m


def test_box_iou_and_giou_match_rasterised_boxes():
  rng = np.random.default_rng(1)
  corners = [np.sort(rng.integers(0, 13, size=(2, 2)), axis=0).T.ravel()[[0, 2, 1, 3]] for _ in range(60)]
  pairs = list(itertools.combinations(corners[:12], 2)) + [(corners[0], corners[0]), (corners[1], [0, 0, 0, 0])]
  a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
  iou, giou = (np.asarray(v) for v in boxes.iou_and_giou(a, b))
  for i, (ba, bb) in enumerate(zip(a, b)):
    ma, mb = _raster(ba), _raster(bb)
    union = (ma | mb).sum()
    want = (ma & mb).sum() / union if union else 0.0
    hull = _raster([min(ba[0], bb[0]), min(ba[1], bb[1]), max(ba[2], bb[2]), max(ba[3], bb[3])]).sum()
    assert iou[i] == pytest.approx(want, abs=1e-6)
    if hull:
      assert giou[i] == pytest.approx(want - (hull - union) / hull, abs=1e-6)
  assert iou[-2] == pytest.approx(1.0)


def test_canvases_are_deterministic_and_labels_and_boxes_match_the_digits(digits):
  args = (digits.x_train, digits.y_train, 40, 20, 1, 3, 0.3)
  c = canvas.make(*args, seed=5)
  again, other = canvas.make(*args, seed=5), canvas.make(*args, seed=6)
  for f in ("x_NHWC", "labels_NHW", "boxes_NM4", "classes_NM", "count_N"):
    np.testing.assert_array_equal(getattr(c, f), getattr(again, f))
  assert not np.array_equal(c.x_NHWC, other.x_NHWC)
  assert 1 <= c.count_N.min() and c.count_N.max() <= 3 and (c.classes_NM >= 0).sum(1).tolist() == c.count_N.tolist()
  # A pixel is labelled iff its intensity exceeds the threshold (digits never overlap, the background is 0).
  np.testing.assert_array_equal(c.labels_NHW > 0, c.x_NHWC[..., 0] > 0.3)
  for n in range(len(c.count_N)):
    covered = np.zeros(c.labels_NHW.shape[1:], bool)
    for label, (top, left, bottom, right) in zip(c.classes_NM[n, :c.count_N[n]], c.boxes_NM4[n, :c.count_N[n]]):
      inside = c.labels_NHW[n, top:bottom, left:right]
      assert label + 1 in inside and set(np.unique(inside)) <= {0, label + 1}  # only this digit's strokes inside
      strokes = inside > 0  # and the box is tight: strokes touch all four sides
      assert strokes[0].any() and strokes[-1].any() and strokes[:, 0].any() and strokes[:, -1].any()
      covered[top:bottom, left:right] = True
    assert not (c.labels_NHW[n] > 0)[~covered].any()


def test_canvas_datasets_hold_pixel_and_box_targets():
  config = canvas.get_config()
  config.size, config.digit_scale, config.n_train, config.n_test = 16, 1, 30, 10
  data_config = data.get_config()
  data_config.name = "digits"
  seg = canvas.segmentation_dataset(data_config, config)
  assert seg.y_train.shape == (30, 16, 16) and seg.num_classes == 11
  assert canvas.segmentation_dataset(data_config, config).x_train is seg.x_train  # built once, cached
  loc = canvas.localisation_dataset(data_config, config)
  assert loc.y_test.shape == (10, 5) and loc.num_classes == 10
  assert (loc.y_test[:, 3] > loc.y_test[:, 1]).all() and (loc.y_test[:, 4] <= 16).all()
  with pytest.raises(UserError, match=r"labels must be in \[0, 10\)"):
    data.Dataset("bad", loc.x_train, loc.y_train + np.array([10, 0, 0, 0, 0], np.int32), loc.x_test, loc.y_test, 10)
  with pytest.raises(UserError, match="must be int32"):
    data.Dataset("bad", seg.x_train, seg.y_train[:, :8], seg.x_test, seg.y_test, 11)


def test_class_and_box_loss():
  truth = jnp.array([[2, 1, 1, 5, 4], [0, 0, 0, 3, 3]], jnp.int32)
  logits = jnp.array([[0.0, 0.0, 9.0], [9.0, 0.0, 0.0]])
  perfect = losses.class_and_box(jnp.concatenate([logits, truth[:, 1:].astype(jnp.float32)], 1), truth)
  np.testing.assert_allclose(perfect["box_iou"], 1.0)
  np.testing.assert_allclose(perfect["hit"], 1.0)
  ce = np.asarray(losses.cross_entropy(logits, truth[:, 0])["loss"])
  np.testing.assert_allclose(perfect["loss"], ce, atol=1e-6)  # GIoU = 1: only the class term is left
  shifted = losses.class_and_box(jnp.concatenate([logits, jnp.array([[11.0, 11, 15, 14], [0, 0, 3, 3]])], 1), truth)
  assert shifted["box_iou"][0] == 0 and shifted["hit"][0] == 0 and shifted["loss"][0] > perfect["loss"][0] + 1


def test_per_image_confusion_and_paired_sampling_variances():
  rng = np.random.default_rng(2)
  y_true, y_pred = rng.integers(0, 4, size=(30, 5, 6)), rng.integers(0, 4, size=(30, 5, 6))
  per = sampling.per_image_confusion(y_true, y_pred, 4)
  assert per.shape == (30, 4, 4)
  np.testing.assert_array_equal(per.sum(0), segmentation_metrics.confusion_matrix(y_true, y_pred, 4))
  np.testing.assert_array_equal(per[7], segmentation_metrics.confusion_matrix(y_true[7], y_pred[7], 4))
  # Two arms that agree on most examples: their difference varies far less than either alone (McNemar).
  a = rng.random(400) < 0.8
  b = np.where(rng.random(400) < 0.05, ~a, a)
  var = sampling.paired_mean_var(a, b)
  d, delta = np.mean(a != b), np.mean(a) - np.mean(b)
  assert var == pytest.approx((d - delta ** 2) / 400, rel=0.01)  # McNemar's paired variance (up to ddof)
  assert var < 0.25 * 2 * (0.8 * 0.2 / 400)  # vs two independent binomials
  # The paired bootstrap of a pooled statistic: for a mean, the variance of the mean difference.
  mean = lambda total: total / 400  # noqa: E731
  boot = sampling.paired_bootstrap_var(a.astype(float), b.astype(float), mean, draws=4000)
  assert boot == pytest.approx(var, rel=0.15)
  assert sampling.paired_bootstrap_var(per, per, segmentation_metrics.mean_iou) == 0.0


def test_checkerboard_shares():
  i, j = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
  board = ((i + j) % 2).astype(np.float64)  # all power at (Nyquist, Nyquist)
  stripes = (i % 2).astype(np.float64)     # all power on the Nyquist row
  smooth = np.sin(2 * np.pi * i / 16)
  shares = spectral.checkerboard_shares(np.stack([board, stripes, smooth, np.ones((16, 16))]))
  np.testing.assert_allclose(shares, [1.0, 1.0, 0.0, 0.0], atol=1e-12)


SEG_VARIANTS = ("transposed", "bilinear", "unet")


def _segmentation_results(miou: dict, fg: dict, init_board: dict, board: dict, seeds: int = 10,
                          test_var: float = 0.005 ** 2) -> dict:
  """Synthetic results of the segmentation experiment: per-seed values around the given means (seeded noise)."""
  rng = np.random.default_rng(0)
  per_seed = lambda m, sd: {v: list(x + sd * rng.normal(size=seeds)) for v, x in m.items()}  # noqa: E731
  pairs = [f"{a}|{b}" for a, b in itertools.combinations([*SEG_VARIANTS, "trivial"], 2)]
  return {"trivial": {"miou": 0.085, "foreground_iou": 0.0}, "miou": per_seed(miou, 0.01),
          "foreground_iou": per_seed(fg, 0.01), "init_checkerboard": per_seed(init_board, 0.002),
          "checkerboard": per_seed(board, 0.0005), "smoke_test": False,
          "test_var": {"miou": dict.fromkeys(pairs, test_var), "foreground_iou": dict.fromkeys(pairs, test_var),
                       "checkerboard": dict.fromkeys(pairs, 0.0002 ** 2)}}


def _verdict(module, claim_id: str, results: dict) -> str:
  claim = next(c for c in module.CLAIMS if c.id == claim_id)
  assert claim.rule is not None
  return claim.assess(results).verdict


def test_segmentation_judges_on_synthetic_results():
  from experiments import segmentation as seg  # pylint: disable=g-import-not-at-top
  flat = {v: 0.003 for v in SEG_VARIANTS}
  r = _segmentation_results({"transposed": 0.40, "bilinear": 0.45, "unet": 0.60}, {"transposed": 0.5,
                            "bilinear": 0.55, "unet": 0.9}, {**flat, "transposed": 0.5}, {**flat, "transposed": 0.05})
  assert _verdict(seg, "cnn_segmentation", r) == verdicts.SUPPORTED
  assert _verdict(seg, "unet_skips_help", r) == verdicts.SUPPORTED
  assert _verdict(seg, "transposed_conv_checkerboard", r) == verdicts.SUPPORTED
  # The U-Net at chance class labels; trained maps with a hair more period-2 power than a resize decoder's (the
  # old rule counted 0.3 % vs 0.2 % as an artefact): below the declared 1 % of the power.
  r = _segmentation_results({"transposed": 0.12, "bilinear": 0.13, "unet": 0.14}, {"transposed": 0.5,
                            "bilinear": 0.55, "unet": 0.9}, {**flat, "transposed": 0.5}, {**flat, "transposed": 0.004})
  assert _verdict(seg, "cnn_segmentation", r) == verdicts.REFUTED  # every decoder far below +15 points
  assert _verdict(seg, "unet_skips_help", r) == verdicts.PARTLY  # digit-vs-bg IoU yes, mIoU (+1 pt) undecided
  assert _verdict(seg, "transposed_conv_checkerboard", r) == verdicts.PARTLY  # at init yes, trained refuted
  # Two seeds that disagree decide nothing.
  r = _segmentation_results({"transposed": 0.30, "bilinear": 0.30, "unet": 0.30}, {v: 0.5 for v in SEG_VARIANTS},
                            flat, flat, seeds=2)
  r["miou"] = {v: [0.1, 0.5] for v in SEG_VARIANTS}
  assert _verdict(seg, "cnn_segmentation", r) == verdicts.INCONCLUSIVE


def _localisation_results(cnn: float, mlp: float, seeds: int = 10, spread: float = 0.01,
                          test_var: float = 0.01 ** 2) -> dict:
  rng = np.random.default_rng(1)
  metrics = ("accuracy", "box_iou", "hit")
  base = cnn + spread * rng.normal(size=seeds)
  scores = {**{f"cnn/{k}": list(base) for k in metrics},
            **{f"mlp/{k}": list(base - (cnn - mlp) + spread * rng.normal(size=seeds)) for k in metrics}}
  return {"scores": scores, "test_var": {k: {"cnn|mlp": test_var, "cnn|trivial": test_var} for k in metrics},
          "params": {"cnn": 100, "mlp": 101}, "trivial": {"accuracy": 0.09, "box_iou": 0.09, "hit": 0.004},
          "smoke_test": False}


def test_localisation_judges_on_synthetic_results():
  from experiments import localisation as loc  # pylint: disable=g-import-not-at-top
  r = _localisation_results(0.85, 0.60)
  assert _verdict(loc, "cnn_localisation", r) == verdicts.SUPPORTED
  assert _verdict(loc, "cnn_localises_better_than_mlp", r) == verdicts.SUPPORTED
  r = _localisation_results(0.12, 0.20)
  assert _verdict(loc, "cnn_localisation", r) == verdicts.REFUTED  # 3 points above the trivial: not 10
  assert _verdict(loc, "cnn_localises_better_than_mlp", r) == verdicts.REFUTED
  r = _localisation_results(0.5, 0.49, seeds=2, spread=0.2)
  assert _verdict(loc, "cnn_localisation", r) == verdicts.INCONCLUSIVE
  assert _verdict(loc, "cnn_localises_better_than_mlp", r) == verdicts.INCONCLUSIVE
  # A finite test set's sampling error widens the interval: a 2-point lead that seeds alone would decide is not.
  assert _verdict(loc, "cnn_localises_better_than_mlp", _localisation_results(0.85, 0.83, spread=0.001,
                                                                              test_var=0.0)) == verdicts.SUPPORTED
  assert _verdict(loc, "cnn_localises_better_than_mlp", _localisation_results(
      0.85, 0.83, spread=0.001, test_var=0.02 ** 2)) == verdicts.INCONCLUSIVE


@pytest.mark.slow  # nine trainings (~30 s); tuning itself: tests/test_tuning.py
def test_learning_rates_are_chosen_on_held_out_training_canvases(tmp_path):
  from experiments import segmentation as seg  # pylint: disable=g-import-not-at-top
  config = seg.get_config(quick=True)
  config.variants, config.lr_grid, config.val_canvases = ("bilinear",), (1e-3, 3e-2), 100
  config.tuning_seeds = 2
  config.train.update(dict(steps=4, log_every=2, checkpoint_every=4, progress=False))
  ds = canvas.segmentation_dataset(config.data, config.canvas)
  tuned = seg.tune_learning_rates(config, ds, seg.build_models(config, ds.num_classes), str(tmp_path))
  t = tuned["bilinear"]
  assert t["grid"] == [1e-3, 3e-2] and len(t["val_miou"]) == 2 and [len(m) for m in t["val_miou_seeds"]] == [2, 2]
  assert t["val_miou"] == [pytest.approx(np.mean(m)) for m in t["val_miou_seeds"]]
  # The highest mean minus one standard error (the tuning seeds' spread: mIoU is no share of examples).
  assert t["learning_rate"] == tuning.choose(dict(zip(t["grid"], t["val_miou_seeds"])), None)[0]
  trials = sorted(os.listdir(tmp_path / "tuning" / "trials"))
  assert trials == ["bilinear_lr0.001_s0", "bilinear_lr0.001_s1", "bilinear_lr0.03_s0", "bilinear_lr0.03_s1"]
  with pytest.raises(UserError, match="val_canvases"):
    config.val_canvases = config.canvas.n_train
    seg.validate_config(config)


@pytest.mark.slow  # 1-2 min each on 2 cores (compiles of several nets): run by .ci/run after the default suite
def test_segmentation_end_to_end_beats_the_all_background_baseline(run_quick):
  config, r, md, workdir = run_quick("segmentation")
  assert os.path.getsize(os.path.join(workdir, "predictions.png")) > 0
  trivial = r["trivial"]["miou"]
  assert trivial == pytest.approx(r["trivial"]["pixel_accuracy"] / 11)  # background IoU = its pixel share
  # 150 quick steps can leave a decoder on the all-background plateau (the U-Net, with some inits): none
  # may do worse than that, and the best must be clearly better.
  for v in config.variants:
    assert np.mean(r["miou"][v]) >= trivial - 1e-9, v
    assert r["params"][v] > 0 and r["step_seconds"][v] > 0 and 0 <= r["train_miou"][v][0] <= 1
    assert r["tuning"][v]["learning_rate"] == config.train.learning_rate
  assert max(np.mean(r["miou"][v]) for v in config.variants) > 1.1 * trivial
  assert r["params"]["unet"] > r["params"]["transposed"] == r["params"]["bilinear"]
  # A resize keeps a constant input constant (up to the zero-padded border); a stride-2 transposed conv does not.
  assert np.mean(r["init_checkerboard"]["transposed"]) > 10 * np.mean(r["init_checkerboard"]["bilinear"])
  assert len(r["records"]) == len(config.variants) * config.seeds
  assert all(0 <= v < 0.01 for m in ("miou", "foreground_iou") for v in r["test_var"][m].values())
  assert set(verdicts_of("segmentation", workdir, md).values()) == {ledger.SMOKE_TEST}


@pytest.mark.slow  # 1-2 min each on 2 cores (compiles of several nets): run by .ci/run after the default suite
def test_localisation_end_to_end_beats_the_trivial_baseline(run_quick):
  config, r, md, workdir = run_quick("localisation")
  assert os.path.getsize(os.path.join(workdir, "predictions.png")) > 0
  scores, trivial = r["scores"], r["trivial"]
  assert np.mean(scores["cnn/box_iou"]) > trivial["box_iou"]
  assert np.mean(scores["mlp/box_iou"]) > trivial["box_iou"]
  assert abs(r["params"]["mlp"] / r["params"]["cnn"] - 1) < 0.05  # "an MLP of similar size"
  assert len(r["records"]) == 2 * config.seeds
  assert all(0 <= v < 0.01 for pairs in r["test_var"].values() for v in pairs.values())
  assert set(r["train_scores"]) == set(scores)
  assert set(verdicts_of("localisation", workdir, md).values()) == {ledger.SMOKE_TEST}


def verdicts_of(name: str, workdir: str, md: str) -> dict:
  """Each claim's verdict, computed by its judge from the stored results.json; results.md must show the same.

  A quick run is a smoke test: every verdict reads so; its judges, run on the same numbers unmarked, still give
  one of the ledger's verdicts.
  """
  import experiments  # pylint: disable=g-import-not-at-top
  from cnnlab.report import rendering as reporting  # pylint: disable=g-import-not-at-top
  stored = reporting.read_json(os.path.join(workdir, "results.json"))
  claims = experiments.get(name).CLAIMS
  findings = {c.id: c.assess(stored) for c in claims}
  assert all(f"— {f.verdict}.** {f.figure}" in md for f in findings.values()) and "Smoke test" in md
  assert all(c.assess({**stored, "smoke_test": False}).verdict in ledger.VERDICTS for c in claims)
  return {k: f.verdict for k, f in findings.items()}


@pytest.mark.slow  # ~40 s on 2 cores (4 tuning trainings, then 2)
def test_localisation_chooses_each_models_rate_on_held_out_training_canvases(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from cnnlab import runner  # pylint: disable=g-import-not-at-top
  from experiments import localisation as loc  # pylint: disable=g-import-not-at-top
  config = loc.get_config(quick=True)
  config.lr_grid, config.val_canvases, config.seeds = (1e-2, 1e-3), 100, 1
  config.train.progress = False
  r = runner.run_experiment(loc, config, str(tmp_path))
  for m, t in r["tuning"].items():
    assert t["grid"] == [1e-3, 1e-2] and len(t["val_hit"]) == 2
    # The highest mean minus one standard error (a share of the 100 validation canvases).
    assert t["learning_rate"] == tuning.choose(dict(zip(t["grid"], t["val_hit_seeds"])), 100)[0]
    trained_with = json.load(open(tmp_path / "trials" / f"{m}_s0" / "trained_with.json"))
    assert trained_with["learning_rate"] == t["learning_rate"]
  assert sorted(os.listdir(tmp_path / "tuning" / "trials")) == [
      "cnn_lr0.001_s0", "cnn_lr0.01_s0", "mlp_lr0.001_s0", "mlp_lr0.01_s0"]
  assert "held-out training canvases" in open(tmp_path / "results.md").read()
  with pytest.raises(UserError, match="val_canvases"):
    config.val_canvases = config.canvas.n_train
    loc.validate_config(config)
