"""What a result was computed with: config, code hashes and library versions, and whether two such stamps agree.

A stamp is a plain dict, stored in a workdir's provenance.json (when a run starts) and run_info.json (when it
ends). A finished result is reused only when its stamp matches the current one in every part.

Its "code" part hashes each source file the run depended on: every cnnlab file and other experiment module
(keyed "../experiments/NAME.py") the experiment module imports, directly or through other such files (import
statements anywhere in a file, so a function's late import counts), and, when the run ends, every file imported
by a module whose registered object (a model, a loss) the run looked up by name (`recording_lookups`); the dataset
package counts whole (WHOLE_PACKAGES). So editing one model re-runs the experiments that use it, not all of them.
This relies on the package's rule that importing a module changes nothing outside it (registering names aside).
"""

import ast
import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
from types import ModuleType
from typing import Any

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
EXPERIMENTS_DIR = os.path.join(os.path.dirname(PACKAGE_DIR), "experiments")
# Libraries whose version can change the numbers a run computes.
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
PARTS = ("config", "module", "code", "versions")  # a stamp's parts, in the order a difference is reported
# Packages that count whole once any of their files is a dependency: datasets are loaded through a per-process
# cache, so a run that is served from it never looks its dataset up by name.
WHOLE_PACKAGES = ("data",)


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


def _module_file(name: str) -> str | None:
  """The file of module `name` (dotted), relative to PACKAGE_DIR, if it is a cnnlab module or an experiment
  module (EXPERIMENTS_DIR; one experiment may reuse another's models); None otherwise. The experiments package's
  own index (`import experiments`) is not a dependency: every experiment imports it to register itself."""
  parts = name.split(".")
  if parts[0] == "experiments" and len(parts) == 2:
    path = os.path.join(EXPERIMENTS_DIR, parts[1] + ".py")
    return os.path.relpath(path, PACKAGE_DIR) if os.path.isfile(path) else None
  if parts[0] != "cnnlab":
    return None
  base = os.path.join(PACKAGE_DIR, *parts[1:])
  for path in (os.path.join(base, "__init__.py"), base + ".py"):
    if os.path.isfile(path):
      return os.path.relpath(path, PACKAGE_DIR)
  return None


def _module_name(rel: str) -> str:
  parts = rel[:-len(".py")].split(os.sep)
  if parts[0] == os.pardir:  # an experiment module: ../experiments/NAME.py
    return ".".join(parts[1:])
  return ".".join(["cnnlab", *(parts[:-1] if parts[-1] == "__init__" else parts)])


@functools.lru_cache(maxsize=1024)
def _imports(path: str, mtime_ns: int, size: int, package: str | None) -> frozenset:  # pylint: disable=unused-argument
  """The cnnlab files (relative to PACKAGE_DIR) that the file at `path` imports, with their parent packages."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: resolved against the importing file's package
        if package is None:
          continue
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
      names.add(base)
      names.update(f"{base}.{a.name}" for a in node.names)
  prefixes = {".".join(n.split(".")[:i + 1]) for n in names for i in range(n.count(".") + 1)}
  return frozenset(f for f in map(_module_file, prefixes) if f)


def dependencies(path: str, package: str | None = None) -> list[str]:
  """The cnnlab files (relative to PACKAGE_DIR) that the Python file at `path` imports, directly or through
  other cnnlab files, sorted. `package` resolves its relative imports (cnnlab's own files know theirs)."""
  def imports(p, pkg):
    st = os.stat(p)
    return _imports(os.path.abspath(p), st.st_mtime_ns, st.st_size, pkg)
  found, todo = set(), list(imports(path, package))
  while todo:
    rel = todo.pop()
    if rel not in found:
      found.add(rel)
      name = _module_name(rel)
      todo += imports(os.path.join(PACKAGE_DIR, rel), name if rel.endswith("__init__.py") else name.rpartition(".")[0])
      if rel.split(os.sep)[0] in WHOLE_PACKAGES and rel.endswith("__init__.py"):  # a whole package: every file
        todo += [f for f in package_files() if f.split(os.sep)[0] == rel.split(os.sep)[0]]
  return sorted(found)


def code_hashes(files) -> dict[str, str | None]:
  """{file: code_hash} for cnnlab files given relative to PACKAGE_DIR; None for a file that no longer exists."""
  out = {}
  for rel in sorted(files):
    path = os.path.join(PACKAGE_DIR, rel)
    out[rel] = code_hash(path) if os.path.isfile(path) else None
  return out


def digest(code: dict) -> str:
  """A short hash of a stamp's "code" part ({file: hash}), for tables."""
  return hashlib.sha256(json.dumps(code, sort_keys=True).encode()).hexdigest()[:16]


def _defining_module(obj: Any) -> str | None:
  while isinstance(obj, functools.partial):
    obj = obj.func
  return getattr(obj, "__module__", None)


@contextlib.contextmanager
def recording_lookups():
  """While open, collects (into the set it yields) the modules defining every object a `cnnlab.registry.Registry`
  lookup returns: the models, datasets and losses a run picks by name, which no import statement names.

  The recorder wraps `Registry.get` from here rather than living in the registry, so that the registry's code
  (which every experiment imports) stays out of what a run's provenance must hash for it.
  """
  from cnnlab import registry  # pylint: disable=g-import-not-at-top
  used: set[str] = set()
  original = registry.Registry.get

  def get(self, name):
    obj = original(self, name)
    used.add(_defining_module(obj))
    return obj

  registry.Registry.get = get
  try:
    yield used
  finally:
    registry.Registry.get = original


def with_lookups(stamp: dict, modules) -> dict:
  """`stamp` with the files of the cnnlab `modules` (dotted names, as `recording_lookups` collects them) and
  everything they import added to its code part."""
  files = set()
  for rel in filter(None, map(_module_file, filter(None, modules))):
    files |= {rel, *dependencies(os.path.join(PACKAGE_DIR, rel), _module_name(rel).rpartition(".")[0])}
  return {**stamp, "code": {**stamp["code"], **code_hashes(files - set(stamp["code"]))}}


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
  return {"config": as_dict, "module": module_hash(module), "code": code_hashes(dependencies(module.__file__)),
          "versions": versions()}


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
    if part == "code" and isinstance(old, dict):
      # The files the run used, hashed now. While they and the experiment module are unchanged, so is everything
      # they import: a file the module imports only now would take an edit to one of them.
      new = code_hashes(old)
      changed = sorted(k for k in old if old[k] != new[k])
      if changed:
        out.append(f"cnnlab source ({', '.join(changed[:4])}{', ...' if len(changed) > 4 else ''})")
      continue
    if part == "code":
      out.append("cnnlab source (recorded as one hash of the whole package)")
      continue
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
      out.append(f"experiment module ({old} -> {new})")
  return out
