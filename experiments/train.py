"""Train any registered model on any dataset: the baseline trainer a paper starts from (no claim judged).

Command:  python run.py --exp=train --config.model=lenet5 --config.data.name=mnist5k
          python run.py --exp=train --config.model=lenet5 --config.data.name=tfds:mnist \
              --config.train.augment=translate:2 --config.train.steps=18000   # full-MNIST recipe: docs/performance.md
          python run.py --exp=train --config.model=resnet20 --config.data.name=tfds:cifar10 \
              --config.train.augment=crop:4,flip --config.train.schedule=cosine --config.train.steps=64000
          python run.py --exp=train --config.model=cnn --config.model_args='{"features": [16, 32]}'
It evaluates every `train.eval_every` steps on the test split (or a validation split carved from the training
set, `eval_split=validation`), keeps the last checkpoints and the best one by that evaluation's accuracy
(`<workdir>/best`), resumes and survives preemption like every run, and writes learning curves and the final
train / test table to results.md. Result: see the workdir's results.md.
"""

import json
import os

import ml_collections
import numpy as np

from cnnlab import data, models
from cnnlab.errors import UserError
from cnnlab.ops import analysis
from cnnlab.report import rendering as reporting
from cnnlab.training import checkpoint, hooks, metric_writer, parallel, steps, train

SPLITS = ("test", "validation")


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  """The standard config; `quick` shrinks it for smoke tests."""
  c = ml_collections.ConfigDict()
  c.model = "lenet5"              # any name in cnnlab.models (see cnnlab/models/)
  c.model_args = "{}"             # JSON object of the model's constructor fields, e.g. '{"features": [16, 32]}'
  c.data = data.get_config()
  c.train = train.get_config()
  c.train.steps = 6000
  c.train.batch_size = 128
  c.train.schedule = "cosine"
  c.train.eval_every = 500
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  c.eval_split = "test"           # 'test' | 'validation' (carved from the training set; the test set is untouched)
  c.validation_fraction = 0.1     # share of the training set held out when eval_split is 'validation'
  c.seed = 0                      # init, batch order and dropout
  if quick:
    c.data.name = "digits"
    c.model = "cnn"
    c.train.steps = 20
    c.train.batch_size = 32
    c.train.eval_every = 10
    c.train.log_every = 10
    c.train.checkpoint_every = 10
    c.train.eval_batch_size = 200
  return c


def model_args(config: ml_collections.ConfigDict) -> dict:
  """`config.model_args` parsed (a one-line error unless it is a JSON object)."""
  try:
    args = json.loads(config.model_args)
  except json.JSONDecodeError as e:
    raise UserError(f"model_args must be a JSON object, e.g. '{{\"features\": [16, 32]}}' ({e.msg})") from None
  if not isinstance(args, dict):
    raise UserError(f"model_args must be a JSON object, got {config.model_args!r}")
  return {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}


def validate_config(config: ml_collections.ConfigDict) -> None:
  """One-line errors for impossible settings, before anything is written."""
  models.MODELS.get(config.model)  # unknown names fail here
  model_args(config)
  if config.eval_split not in SPLITS:
    raise UserError(f"eval_split must be one of {SPLITS}, got {config.eval_split!r}")
  if not 0 < config.validation_fraction < 1:
    raise UserError(f"validation_fraction must be in (0, 1), got {config.validation_fraction}")


def evaluation_set(config: ml_collections.ConfigDict, ds: data.Dataset) -> data.Dataset:
  """The dataset fit trains on, whose test split is what evaluation during training reads."""
  if config.eval_split == "test":
    return ds
  split = data.holdout_split(ds.name, ds.x_train, ds.y_train, config.validation_fraction, config.seed,
                             ds.num_classes)
  return split


def evaluation_hook(config, ds: data.Dataset, workdir: str) -> tuple[hooks.Hook, checkpoint.Checkpointer, dict]:
  """Every `eval_every` steps: score the evaluation split, log it, keep the state with the best accuracy."""
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "best"), max_to_keep=1)
  path = os.path.join(workdir, "best", "best.json")
  best = reporting.read_json(path) if os.path.exists(path) else {"step": None, "accuracy": -1.0}
  mesh = parallel.make_mesh()

  def fn(step, state, metrics):
    del metrics
    score = steps.evaluate(state, ds.x_test, ds.y_test, config.train.eval_batch_size, mesh, config.train.loss)
    with open(os.path.join(workdir, "evaluations.jsonl"), "a", encoding="utf-8") as f:
      f.write(json.dumps({"step": step, **score}) + "\n")
    if score["accuracy"] > best["accuracy"]:
      ckpt.save(step, state)
      best.update(step=step, **score)
      reporting.write_json(path, best)
    return False

  return hooks.Hook(config.train.eval_every or config.train.steps, fn), ckpt, best


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  ds = data.load(config.data)
  model = models.create(config.model, num_classes=ds.num_classes, **model_args(config))
  fit_ds = evaluation_set(config, ds)
  hook, best_ckpt, best = evaluation_hook(config, fit_ds, workdir)
  fit_config = ml_collections.ConfigDict(config.train.to_dict())
  fit_config.eval_every = 0  # the hook evaluates (and keeps the best state); fit need not score the split again
  train_dir = os.path.join(workdir, "train")
  try:
    state, summary = train.fit(fit_config, model, fit_ds, train_dir, config.seed, hooks=(hook,))
  finally:
    best_ckpt.close()
  final = {"train": {k[6:]: v for k, v in summary.items() if k.startswith("train_")},
           config.eval_split: {k[5:]: v for k, v in summary.items() if k.startswith("test_")}}
  if config.eval_split == "validation":  # the untouched test set, scored once at the end
    final["test"] = steps.evaluate(state, ds.x_test, ds.y_test, config.train.eval_batch_size, parallel.make_mesh(),
                                   config.train.loss)
  results = {"model": config.model, "dataset": ds.name, "params": analysis.count_params(state.params),
             "steps": summary["steps"], "final": final, "best": dict(best),
             "curves": _curves(train_dir, workdir, config.eval_split)}
  reporting.write_results(workdir, results, _markdown(config, results))
  _plot(workdir, results["curves"], config.eval_split)
  return results


def _curves(train_dir: str, workdir: str, split: str) -> dict[str, list]:
  """(step, value) pairs of the logged train loss / accuracy and of the periodic evaluations (last per step)."""
  out: dict[str, list] = {}
  for row in metric_writer.read_metrics(train_dir):
    for k in ("train_loss", "train_accuracy"):
      if k in row:
        out.setdefault(k, []).append((row["step"], row[k]))
  with open(os.path.join(workdir, "evaluations.jsonl"), encoding="utf-8") as f:
    evals = {r["step"]: r for r in map(json.loads, filter(str.strip, f))}  # a replayed step overwrites
  for k in ("loss", "accuracy"):
    out[f"{split}_{k}"] = [(s, evals[s][k]) for s in sorted(evals)]
  return out


def _markdown(config, results: dict) -> str:
  rows = [[split, f"{100 * m['accuracy']:.2f}", f"{100 * (1 - m['accuracy']):.2f}", f"{m['loss']:.4f}"]
          for split, m in results["final"].items()]
  best = results["best"]
  return "".join([
      f"# `{results['model']}` on `{results['dataset']}`\n\n",
      f"{results['params']:,} parameters; {results['steps']} steps of batch {config.train.batch_size} "
      f"({config.train.optimizer}, lr {config.train.learning_rate:g}, {config.train.schedule}); augmentation: "
      f"{config.train.augment or 'none'}.\n\n## Final\n\n",
      reporting.markdown_table(["split", "accuracy %", "error %", "loss"], rows),
      f"\nBest {config.eval_split} accuracy during training: "
      + (f"{100 * best['accuracy']:.2f} % at step {best['step']} (checkpoint in `best/`).\n" if best["step"]
         else "none evaluated.\n"),
      "\n![learning curves](learning_curves.png)\n"])


def _plot(workdir: str, curves: dict, split: str) -> None:
  fig, (ax, bx) = reporting.new_figure(1, 2, figsize=(10, 4))
  for name, axis in (("loss", ax), ("accuracy", bx)):
    for part in ("train", split):
      pts = curves.get(f"{part}_{name}")
      if pts:
        s, v = np.asarray(pts).T
        axis.plot(s, v, marker="o" if part == split else None, label=f"{part} {name}")
    axis.set_xlabel("step")
    axis.legend()
    axis.grid(alpha=0.3)
  reporting.save_figure(fig, workdir, "learning_curves")
