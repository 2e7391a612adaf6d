"""JAX's persistent compilation cache: a rerun loads the XLA executables an earlier run compiled."""

import os

import jax

ENV_VAR = "CNNLAB_JAX_CACHE"  # a directory, or "off" / "" to disable the cache
DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "cnnlab", "jax")
MIN_COMPILE_SECONDS = 0.3  # programs that compile faster than this are not worth a disk read


def enable(path: str | None = None) -> str | None:
  """Turns the cache on in `path` (default: $CNNLAB_JAX_CACHE, else ~/.cache/cnnlab/jax); returns it, or None if off."""
  path = os.environ.get(ENV_VAR, DEFAULT_DIR) if path is None else path
  if path.strip().lower() in ("", "off", "0", "false", "none"):
    return None
  path = os.path.expanduser(path)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return None  # an unwritable cache location must not stop a run; it only costs compile time
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
