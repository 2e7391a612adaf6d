"""The persistent compilation cache is off when asked, and never fails a run over an unusable directory."""

import jax

from cnnlab.runtime import compile_cache


def test_off_values_leave_jax_config_alone(monkeypatch):
  before = jax.config.jax_compilation_cache_dir
  for value in ("off", "", "0", " None "):
    monkeypatch.setenv(compile_cache.ENV_VAR, value)
    assert compile_cache.enable() is None
  assert compile_cache.enable("off") is None
  assert jax.config.jax_compilation_cache_dir == before


def test_unwritable_directory_disables_the_cache(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  before = jax.config.jax_compilation_cache_dir
  assert compile_cache.enable(str(blocker / "cache")) is None
  assert jax.config.jax_compilation_cache_dir == before
