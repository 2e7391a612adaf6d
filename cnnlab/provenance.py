"""What a result was computed with: config, code hashes and library versions, and whether two such stamps agree.

A stamp is a plain dict, stored in a workdir's provenance.json (when a run starts) and run_info.json (when it
ends). A finished result is reused only when its stamp matches the current one in every part.
"""

import ast
import functools
import hashlib
import importlib.metadata
import json
import os
from types import ModuleType
from typing import Any

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Libraries whose version can change the numbers a run computes.
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
PARTS = ("config", "module", "code", "versions")  # a stamp's parts, in the order a difference is reported


@functools.lru_cache(maxsize=512)
def _file_hash(path: str, mtime_ns: int, size: int) -> str:  # pylint: disable=unused-argument
  # Keyed on mtime and size as well, so an edited file is hashed again while unchanged ones come from the cache.
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    tree = ast.parse(text)
  except SyntaxError:  # still a source file of the package: hash its bytes
    return hashlib.sha256(text.encode()).hexdigest()
  for node in ast.walk(tree):  # docstrings do not change what code computes (comments never reach the AST)
    body = getattr(node, "body", None)
    if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
      node.body = body[1:] or [ast.Pass()]
  return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def code_hash(path: str) -> str:
  """A short hash of one Python file's code, blind to its comments and docstrings."""
  st = os.stat(path)
  return _file_hash(os.path.abspath(path), st.st_mtime_ns, st.st_size)[:16]


def package_files(root: str | None = None) -> list[str]:
  """Every Python source file under `root` (default: the cnnlab package), as paths relative to it, sorted."""
  root = root or PACKAGE_DIR
  found = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
    found += [os.path.relpath(os.path.join(folder, f), root) for f in files if f.endswith(".py")]
  return sorted(found)


def source_hash(root: str | None = None) -> str:
  """A short hash of the code of every source file of the cnnlab package (or of the package at `root`)."""
  root = root or PACKAGE_DIR
  h = hashlib.sha256()
  for rel in package_files(root):
    h.update(f"{rel}\0{code_hash(os.path.join(root, rel))}\n".encode())
  return h.hexdigest()[:16]


def module_hash(module: ModuleType) -> str:
  """A short hash of an experiment module's code (not its comments or docstrings)."""
  return code_hash(module.__file__)


def versions() -> dict[str, str | None]:
  """The installed version of each library in LIBRARIES (None if absent)."""
  out = {}
  for name in LIBRARIES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def stamp(config: Any, module: ModuleType) -> dict:
  """The provenance of a run of `module` with `config`: the config, code hashes and library versions."""
  as_dict = json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else dict(config)
  return {"config": as_dict, "module": module_hash(module), "code": source_hash(), "versions": versions()}


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def differences(recorded: dict | None, current: dict) -> list[str]:
  """What differs between a recorded stamp and the current one, in words; empty when they match."""
  if not recorded or any(part not in recorded for part in PARTS):
    return ["no provenance was recorded"]
  out = []
  for part in PARTS:
    old, new = recorded[part], current[part]
    if old == new:
      continue
    if isinstance(new, dict):
      if part == "config":
        old, new = _flat(old), _flat(new)
      keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
      if part == "versions":
        out.append("versions (" + ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in keys) + ")")
      else:
        out.append(f"config (fields {', '.join(keys)})")
    else:
      out.append({"module": "experiment module", "code": "cnnlab source"}[part] + f" ({old} -> {new})")
  return out
