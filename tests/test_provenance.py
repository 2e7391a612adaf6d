"""Provenance stamps: every part is recorded, and any difference is named."""

import os

from cnnlab import provenance
import experiments


def test_stamp_records_config_code_module_and_versions():
  module = experiments.get("param_count")
  s = provenance.stamp(module.get_config(quick=True), module)
  assert set(s) == set(provenance.PARTS)
  assert s["config"]["xla_check"] is False and len(s["module"]) == 16
  assert "errors.py" in s["code"] and "models/__init__.py" in s["code"]  # what param_count imports, directly or not
  assert "runner.py" not in s["code"] and all(len(h) == 16 for h in s["code"].values())
  assert s["versions"]["jax"] and s["versions"]["flax"]
  assert provenance.differences(s, s) == []


def test_every_difference_is_named():
  module = experiments.get("param_count")
  s = provenance.stamp(module.get_config(quick=True), module)
  other = {**s, "config": {**s["config"], "lenet_input": 28}, "code": {**s["code"], "errors.py": "0" * 16},
           "versions": {**s["versions"], "jax": "0.0.1"}}
  diff = provenance.differences(other, s)
  assert diff[0] == "config (fields lenet_input)" and diff[1] == "cnnlab source (errors.py)"
  assert diff[2].startswith("versions (jax 0.0.1 -> ")
  assert provenance.differences({**s, "code": {**s["code"], "gone.py": "0" * 16}}, s) == ["cnnlab source (gone.py)"]
  assert provenance.differences({**s, "code": "0" * 16}, s) == [
      "cnnlab source (recorded as one hash of the whole package)"]
  assert provenance.differences(None, s) == ["no provenance was recorded"] and provenance.differences({}, s)


def test_dependencies_follow_imports_anywhere_in_a_file_and_through_other_files(tmp_path):
  script = tmp_path / "script.py"
  script.write_text("import numpy\n\ndef f():\n  from cnnlab.models import segnets\n")
  deps = provenance.dependencies(str(script))
  assert {"__init__.py", "models/__init__.py", "models/segnets.py"} <= set(deps)
  assert "ops/conv_arithmetic.py" in deps  # imported by segnets.py
  assert "models/lenet.py" not in deps and "runner.py" not in deps
  script.write_text("from .models import lenet\nfrom . import errors\n")  # relative to the package given
  assert {"models/lenet.py", "errors.py"} <= set(provenance.dependencies(str(script), package="cnnlab"))
  script.write_text("from cnnlab.data import canvas\n")  # a dataset package counts whole
  assert {"data/mnist1d.py", "data/digits.py"} <= set(provenance.dependencies(str(script)))


def test_an_experiment_that_reuses_another_depends_on_it_but_not_on_the_experiment_index():
  deps = provenance.dependencies(experiments.get("overfitting").__file__)
  shared = os.path.join(os.pardir, "experiments", "weight_sharing.py")
  assert shared in deps  # overfitting builds weight_sharing's models: editing them must re-run it
  assert set(provenance.dependencies(experiments.get("weight_sharing").__file__)) < set(deps)  # and its imports
  assert not any(d.endswith(os.path.join("experiments", "__init__.py")) for d in deps)
  assert provenance.code_hashes([shared])[shared] == provenance.code_hash(experiments.get("weight_sharing").__file__)
  assert not any("experiments" in d for d in provenance.dependencies(experiments.get("weight_sharing").__file__))


def test_lookups_by_name_are_recorded_while_recording():
  from cnnlab import models, registry  # pylint: disable=g-import-not-at-top
  original = registry.Registry.get
  with provenance.recording_lookups() as used:
    models.create("unet", features=(4, 8))  # a functools.partial of SegNet
  models.create("lenet5")
  assert used == {"cnnlab.models.segnets"} and registry.Registry.get is original
  stamp = provenance.with_lookups({"code": {}}, used)
  assert {"models/segnets.py", "ops/conv_arithmetic.py", "errors.py"} <= set(stamp["code"])
  assert provenance.digest(stamp["code"]) != provenance.digest({}) and len(provenance.digest(stamp["code"])) == 16
