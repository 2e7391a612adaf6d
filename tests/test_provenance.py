"""Provenance stamps: every part is recorded, and any difference is named."""

from cnnlab import provenance
import experiments


def test_stamp_records_config_code_module_and_versions():
  module = experiments.get("param_count")
  s = provenance.stamp(module.get_config(quick=True), module)
  assert set(s) == set(provenance.PARTS)
  assert s["config"]["xla_check"] is False and len(s["code"]) == len(s["module"]) == 16
  assert s["versions"]["jax"] and s["versions"]["flax"]
  assert provenance.differences(s, s) == []


def test_every_difference_is_named():
  module = experiments.get("param_count")
  s = provenance.stamp(module.get_config(quick=True), module)
  other = {**s, "config": {**s["config"], "lenet_input": 28}, "code": "0" * 16,
           "versions": {**s["versions"], "jax": "0.0.1"}}
  diff = provenance.differences(other, s)
  assert diff[0] == "config (fields lenet_input)" and diff[1].startswith("cnnlab source (0000")
  assert diff[2].startswith("versions (jax 0.0.1 -> ")
  assert provenance.differences(None, s) == ["no provenance was recorded"] and provenance.differences({}, s)


def test_the_package_hash_covers_every_source_file():
  files = provenance.package_files()
  assert "runner.py" in files and "training/train.py" in files and all(f.endswith(".py") for f in files)
