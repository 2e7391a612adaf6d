"""A unit's receptive field follows rf_l = rf_{l-1} + (k̂_l - 1) jump_{l-1}; dilation grows it exponentially.

Measures, for every layer of the AlexNet, VGG-16 and cnnlab CNN geometries, the analytic field and the non-zero
region of the gradient of one output unit; the field and parameter count of plain vs exponentially dilated 3x3
stacks per depth; and the effective field (mean |gradient|) of a small CNN's last conv at init and after training
(300 steps on mnist5k, per seed). The CLAIMS judges compare analytic and measured fields (exact: no seeds).

Command: python run.py --exp=receptive_field
Result:  see REPORT.md (ledger) and the run's results.md.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import experiments
from cnnlab import data, kernels, models
from cnnlab.ops import analysis, receptive_field as rfl
from cnnlab.report import ledger, rendering as reporting, stats, tables, verdicts
from cnnlab.training import parallel, state as state_lib, sweep, tasks, train
from cnnlab.errors import UserError
from cnnlab.ops.receptive_field import Layer


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  """The standard config; `quick` shrinks it for smoke tests."""
  c = experiments.new_config(quick)
  c.stacks = "alexnet,vgg16,cnn"  # geometries whose per-layer field is computed and measured
  c.seeds = 10                 # trainings of the CNN (init and batch order), each ERF compared with its own init's
  c.seed_base = 0              # first seed: this run uses seeds seed_base .. seed_base + seeds - 1 (another base draws
                               # a disjoint set)
  c.features = "16,32,32"      # conv widths of the cnnlab CNN (conv3-relu-maxpool2 per stage)
  c.erf_images = 128           # test images averaged for the effective receptive field
  c.erf_fraction = 0.9         # the ERF's size: fewest pixels / disc radius holding this much |gradient|
  c.max_depth = 6              # dilated vs plain 3x3 stacks of depth 1..max_depth
  c.stack_channels = 16        # channels of those stacks (for their parameter counts)
  c.data = data.get_config()   # dataset of the trained CNN (see cnnlab.data)
  c.train = train.get_config()  # optimisation of the trained CNN (see cnnlab.training.train)
  c.train.steps = 300
  c.train.batch_size = 64
  c.train.log_every = 100
  c.train.checkpoint_every = 300
  c.train.tensorboard = c.train.progress = False
  if quick:
    c.stacks, c.features, c.erf_images, c.max_depth, c.seeds = "cnn", "4,8,8", 8, 3, 2
    c.train.steps = c.train.checkpoint_every = 4
    c.train.batch_size = 32
  return c


def validate_config(config: ml_collections.ConfigDict) -> None:
  """One-line UserErrors for impossible seed settings."""
  if config.seeds < 1 or config.seed_base < 0:
    raise UserError(f"receptive_field needs seeds >= 1 and seed_base >= 0, got {config.seeds}, {config.seed_base}")


def alexnet_geometry() -> list[Layer]:
  """conv1..pool5 of Krizhevsky et al. 2012."""
  return [Layer(11, 4, name="conv1"), Layer(3, 2, kind="pool", name="pool1"), Layer(5, padding=2, name="conv2"),
          Layer(3, 2, kind="pool", name="pool2"), Layer(3, padding=1, name="conv3"),
          Layer(3, padding=1, name="conv4"), Layer(3, padding=1, name="conv5"), Layer(3, 2, kind="pool", name="pool5")]


def vgg16_geometry() -> list[Layer]:
  """conv1_1..pool5 of VGG-16 (Simonyan & Zisserman 2015)."""
  layers = []
  for block, n in enumerate((2, 2, 3, 3, 3), start=1):
    layers += [Layer(3, padding=1, name=f"conv{block}_{i + 1}") for i in range(n)]
    layers.append(Layer(2, 2, kind="pool", name=f"pool{block}"))
  return layers


def cnn_geometry(model: Any) -> list[Layer]:
  """The conv/pool geometry of a cnnlab `cnn` model ('SAME' = padding k // 2 for odd k)."""
  layers = []
  for i, _ in enumerate(model.features):
    pad = model.kernel_size // 2 if model.padding == "SAME" else 0
    layers.append(Layer(model.kernel_size, model.strides, padding=pad, name=f"conv{i}"))
    if model.pool != "none":
      layers.append(Layer(2, 2, kind="pool", name=f"pool{i}"))
  return layers


def dilation_table(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """Plain vs exponentially dilated 3x3 stacks: field (analytic and measured) and parameters, per depth."""
  depth = config.max_depth
  stacks = {"plain": rfl.ConvStack(config.stack_channels, 3, (1,) * depth),
            "dilated": rfl.ConvStack(config.stack_channels, 3, tuple(2 ** i for i in range(depth)))}
  # Depth L is the first L layers of the deepest stack, so one pass over the prefixes measures them all.
  measured = {k: rfl.empirical_per_layer(s.layers()) for k, s in stacks.items()}
  rows = []
  for n in range(1, depth + 1):
    row = {"depth": n}
    for kind, stack in stacks.items():
      prefix = stack.clone(dilations=stack.dilations[:n])
      rf = rfl.analytic(prefix.layers())[-1]["rf"]
      variables = analysis.abstract_variables(prefix, (1, rf + 8, rf + 8, config.stack_channels))
      row[kind] = {"dilations": list(prefix.dilations), "rf": rf, "measured_rf": measured[kind][n - 1]["measured_rf"],
                   "params": analysis.count_params(variables["params"])}
    rows.append(row)
  return rows


def _erf_fn(model, layer: str, centre: tuple[int, int]):
  """params, x -> mean |d (centre unit of `layer`, summed over channels) / d input| over the images x."""
  def erf(params, x):
    def feature(x):
      _, state = model.apply({"params": params}, x, capture_intermediates=lambda m, _: m.name == layer,
                             mutable=["intermediates"])
      return state["intermediates"][layer]["__call__"][0]
    grad = jax.grad(lambda x: feature(x)[:, centre[0], centre[1], :].sum())(x)
    return jnp.abs(grad).sum(-1).mean(0)
  return jax.jit(erf)  # One compile serves the untrained and the trained params.


def _describe(m: np.ndarray, field_area: int, fraction: float) -> dict[str, Any]:
  (r0, r1), (c0, c1) = rfl.nonzero_extent(m)
  area = rfl.mass_area(m, fraction)
  return {"support_rows": (r0, r1), "support_cols": (c0, c1), "mass_area": area,
          "mass_area_fraction": area / field_area, "mass_radius": rfl.mass_radius(m, fraction)}


def effective_fields(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """ERF of the CNN's last conv at its init and after training, per seed (paired: the same init)."""
  ds = data.load(config.data)
  features = tuple(int(v) for v in config.features.split(","))
  model = models.create("cnn", features=features, num_classes=ds.num_classes)
  geometry = cnn_geometry(model)
  last_conv = f"conv{len(features) - 1}"
  conv_geometry = geometry[:[g.name for g in geometry].index(last_conv) + 1]
  side = ds.example_shape[0]
  out = rfl.output_size(conv_geometry, side)
  centre = (out // 2, out // 2)
  lo, hi = rfl.unit_field(conv_geometry, centre[0])
  x = ds.x_test[:config.erf_images]
  net = kernels.specialise(model, config.train.kernels)  # as fit runs it
  erf = _erf_fn(net, last_conv, centre)  # One compile serves the untrained and the trained params.
  tx = state_lib.make_optimizer(config.train)

  def maps(seed, state, _):  # the untrained params are the fit's own init: fit draws them from the same key
    init = state_lib.create_train_state(net, tx, tasks.SUPERVISED.keys(seed)[0], ds.example_shape,
                                        parallel.make_mesh())
    return {"maps": {"untrained": np.asarray(erf(init.params, x)), "trained": np.asarray(erf(state.params, x))}}

  seeds = range(config.seed_base, config.seed_base + config.seeds)
  records = sweep.run_trials(workdir, [sweep.Trial(f"cnn_s{s}", model, ds, s, config.train, {},
                                                   after_fit=functools.partial(maps, s)) for s in seeds],
                             progress=False)
  rf_area = (min(hi, side - 1) - max(lo, 0) + 1) ** 2
  per_seed = [{"seed": r["seed"], "train_accuracy": r["train_accuracy"], "test_accuracy": r["test_accuracy"],
               **{k: _describe(m, rf_area, config.erf_fraction) for k, m in r["maps"].items()}} for r in records]
  return {"dataset": ds.name, "model_features": features, "layer": last_conv, "unit": centre, "input_side": side,
          "field": (lo, hi), "field_on_input_area": rf_area, "steps": config.train.steps, "per_seed": per_seed,
          "maps": records[0]["maps"]}


def support_inside_field(erf: dict, s: dict) -> bool:
  """Does the non-zero gradient of one ERF map (its `_describe` entry `s`) lie inside the field (clipped)?"""
  (r0, r1), (c0, c1), (lo, hi) = s["support_rows"], s["support_cols"], erf["field"]
  return max(lo, 0) <= min(r0, c0) and max(r1, c1) <= min(hi, erf["input_side"] - 1)


def erf_change(per_seed: list[dict]) -> str:
  """Training's effect on the ERF's 90%-mass area, paired by seed (trained vs its own init), in words."""
  trained, untrained = ([p[k]["mass_area"] for p in per_seed] for k in ("trained", "untrained"))
  e = stats.paired(trained, untrained)
  lo, hi = e.interval()
  what = "grew" if lo > 0 else "shrank" if hi < 0 else "did not detectably change"
  return (f"training {what} the effective field: {np.mean(trained):.0f} px trained vs {np.mean(untrained):.0f} px "
          f"at init, paired difference {e.estimate:+.1f} px [95% CI {lo:+.1f}, {hi:+.1f}] over {e.n} seed(s)")


def per_layer_fields(config: ml_collections.ConfigDict) -> dict[str, list[dict]]:
  """Per stack of `config.stacks`: each layer's analytic field beside the measured one (gradient support)."""
  features = tuple(int(v) for v in config.features.split(","))
  known = {"alexnet": ("AlexNet (conv1..pool5)", alexnet_geometry),
           "vgg16": ("VGG-16 (conv1_1..pool5)", vgg16_geometry),
           "cnn": (f"cnnlab cnn{list(features)}", lambda: cnn_geometry(models.create("cnn", features=features)))}
  per_layer = {}
  for key in [k.strip() for k in config.stacks.split(",") if k.strip()]:
    if key not in known:
      raise UserError(f"unknown stack {key!r} in config.stacks; use some of {', '.join(known)}")
    name, layers = known[key][0], known[key][1]()
    rows = rfl.analytic(layers)
    for row, measured in zip(rows, rfl.empirical_per_layer(layers)):
      row.update({k: measured[k] for k in ("measured_rf", "measured_rows", "measured_cols", "predicted")})
    per_layer[name] = rows
  return per_layer


def agrees(row: dict) -> bool:
  """Do a layer's measured gradient rows and columns both equal its analytic field (clipped to the input)?"""
  return list(row["measured_rows"]) == list(row["predicted"]) == list(row["measured_cols"])


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Measures, writes results.json, results.md and the figures to `workdir`; returns the measurements."""
  per_layer = per_layer_fields(config)
  erf = effective_fields(config, workdir)
  results = {"per_layer": per_layer, "dilation": dilation_table(config),
             "erf": {k: v for k, v in erf.items() if k != "maps"}}
  results["figures"] = [_erf_figure(erf, workdir), _dilation_figure(results["dilation"], workdir)]
  results["smoke_test"] = config.smoke_test
  reporting.write_results(workdir, results, render(results, config))
  return results


def _erf_figure(erf: dict, workdir: str) -> str:
  import matplotlib.patches as patches  # pylint: disable=g-import-not-at-top
  fig, axes = reporting.new_figure(1, 2, figsize=(8, 4))
  lo, hi = erf["field"]
  for ax, (name, m) in zip(axes, erf["maps"].items()):
    ax.imshow(m / m.max(), cmap="viridis")
    ax.add_patch(patches.Rectangle((lo - 0.5, lo - 0.5), hi - lo + 1, hi - lo + 1, fill=False, ec="w", ls="--"))
    s = erf["per_seed"][0][name]
    ax.set_title(f"{name} (seed {erf['per_seed'][0]['seed']}): {s['mass_area_fraction']:.0%} of the field holds 90%",
                 fontsize=9)
    ax.axis("off")
  fig.suptitle(f"Effective receptive field of {erf['layer']}'s centre unit ({erf['dataset']}); dashed: "
               "theoretical field", fontsize=9)
  return reporting.save_figure(fig, workdir, "effective_receptive_field")


def _dilation_figure(rows: list[dict], workdir: str) -> str:
  fig, ax = reporting.new_figure(figsize=(5, 3.5))
  depth = [r["depth"] for r in rows]
  for kind in ("plain", "dilated"):
    ax.plot(depth, [r[kind]["measured_rf"] for r in rows], "o-", label=f"{kind} 3x3 (measured)")
  ax.set_yscale("log", base=2)
  ax.set_xlabel("depth (layers)")
  ax.set_ylabel("receptive field (pixels)")
  ax.legend()
  return reporting.save_figure(fig, workdir, "dilation_growth")


def render(results: dict, config: ml_collections.ConfigDict) -> str:
  """results.md: per-layer fields, the dilation table, the effective field, and the verdicts of CLAIMS."""
  md = ["# Receptive fields\n", "Measured = extent of the non-zero gradient of the centre output unit of an "
        "all-ones linear net with the same geometry.\n"]
  for name, rows in results["per_layer"].items():
    md += [f"## {name}\n", reporting.markdown_table(
        ["layer", "kernel", "stride", "dilation", "jump", "analytic field", "measured field", "agree"],
        [[r["layer"], r["kernel"], r["stride"], r["dilation"], r["jump"], r["rf"], r["measured_rf"],
          "yes" if agrees(r) else "NO"] for r in rows]), ""]
  dil = results["dilation"]
  md += ["## Dilation: exponential growth at the same parameter count\n", reporting.markdown_table(
      ["depth", "plain field", "dilated field (d = 1, 2, 4, ...)", "plain params", "dilated params",
       "analytic = measured"],
      [[r["depth"], r["plain"]["rf"], r["dilated"]["rf"], r["plain"]["params"], r["dilated"]["params"],
        "yes" if all(r[k]["rf"] == r[k]["measured_rf"] for k in ("plain", "dilated")) else "NO"] for r in dil]), ""]
  e, ps, ms = results["erf"], results["erf"]["per_seed"], reporting.fmt_mean_std
  col = lambda kind, key: [p[kind][key] for p in ps]  # noqa: E731
  md += [f"## Effective receptive field: {e['layer']} of cnn{list(e['model_features'])} on {e['dataset']}\n",
         f"Centre unit {tuple(e['unit'])}, theoretical field rows/cols {tuple(e['field'])} "
         f"({e['field_on_input_area']} pixels on the input). {len(ps)} seed(s), each trained {e['steps']} steps: "
         f"train accuracy {ms([p['train_accuracy'] for p in ps], 100)} %, test accuracy "
         f"{ms([p['test_accuracy'] for p in ps], 100)} % (mean ± std over seeds).\n", reporting.markdown_table(
             ["network", f"pixels holding {config.erf_fraction:.0%} of the gradient mass", "fraction of theoretical "
              "field", f"radius holding {config.erf_fraction:.0%}", "gradient support inside the field"],
             [[k, ms(col(k, "mass_area"), 1, 0), ms(col(k, "mass_area_fraction"), 1, 3),
               ms(col(k, "mass_radius"), 1, 2), f"{sum(support_inside_field(e, p[k]) for p in ps)}/{len(ps)} seeds"]
              for k in ("untrained", "trained")]),
         f"\nEffect of training (each seed's trained net vs its own init): {erf_change(ps)}.\n",
         tables.verdicts_section(CLAIMS, results), "\nFigures: " + ", ".join(results["figures"])]
  return "\n".join(md)


def _judge_formula(results: dict) -> ledger.Finding:
  rows = [r for stack in results["per_layer"].values() for r in stack]
  held = sum(r["rf"] == r["measured_rf"] for r in rows)
  ends = ", ".join(f"{name.split(' ')[0]} {stack[-1]['rf']} px" for name, stack in results["per_layer"].items())
  return ledger.Finding(f"{held}/{len(rows)} layers: analytic field = gradient support ({ends})",
                        verdicts.from_counts(held, len(rows)))


def _judge_dilation(results: dict) -> ledger.Finding:
  deepest = results["dilation"][-1]
  plain, dilated = deepest["plain"], deepest["dilated"]
  exponential = all(r["dilated"]["measured_rf"] == 2 ** (r["depth"] + 1) - 1 for r in results["dilation"])
  same_params = all(r["dilated"]["params"] == r["plain"]["params"] for r in results["dilation"])
  return ledger.Finding(f"depth {deepest['depth']}: {dilated['measured_rf']} px dilated vs {plain['measured_rf']} px "
                        f"plain, same {plain['params']:,} params; 2^(L+1)-1 at every depth: {exponential}",
                        verdicts.from_flag(exponential and same_params
                                           and dilated["measured_rf"] > plain["measured_rf"]))


CLAIMS = [
    ledger.Claim("receptive_field_formula", "A unit's receptive field grows as rf_l = rf_(l-1) + (k_l - 1) "
                 "jump_(l-1) through conv and pooling layers.", "Dumoulin & Visin 2016; Araujo et al. 2019",
                 "analytic field vs the non-zero region of the gradient of one output unit, every layer of "
                 "AlexNet, VGG-16 and cnnlab's CNN", _judge_formula),
    ledger.Claim("dilation_grows_field", "Dilated convolutions grow the receptive field exponentially with depth "
                 "at no extra parameters.", "Yu & Koltun 2016", "measured field of 3x3 stacks with dilation "
                 "doubling per layer vs undilated, same parameter count", _judge_dilation),
]
