"""A tiny name -> object registry shared by models, datasets and experiments."""

import difflib
import importlib
import pkgutil
from typing import Any, Generic, TypeVar

from cnnlab.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
  """Maps names to objects; lookups of unknown names raise a one-line `UserError`."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, T] = {}

  def register(self, name: str, obj: T | None = None) -> Any:
    """Registers `obj` under `name`; without `obj`, returns a decorator."""
    if obj is None:
      return lambda o: self.register(name, o)
    if name in self._items:
      raise ValueError(f"{self.kind} {name!r} is registered twice")
    self._items[name] = obj
    return obj

  def get(self, name: str) -> T:
    if name not in self._items:
      close = difflib.get_close_matches(name, self._items, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise UserError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}.{hint}")
    return self._items[name]

  def names(self) -> list[str]:
    return sorted(self._items)

  def __contains__(self, name: str) -> bool:
    return name in self._items


def import_submodules(package_name: str) -> None:
  """Imports every module of a package, so that dropping a file in registers it."""
  package = importlib.import_module(package_name)
  for info in pkgutil.iter_modules(package.__path__):
    if not info.name.startswith("_"):
      importlib.import_module(f"{package_name}.{info.name}")

