"""Imports deferred to first use, so that a command pays only for what it runs.

- ``deploy = lazy_module("sms_plugin.deploy")`` gives a stand-in for the module that imports it
  the first time one of its attributes is read;
- ``__getattr__ = lazy_attributes(__name__, {"database": ["Catalog"], ...})`` lets a package
  re-export names of its submodules without importing them all when the package is imported
  (PEP 562).

Python 3.15's ``lazy import`` will make both moot.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any


class _ModuleOnFirstUse(ModuleType):
    """Stands for a module that is not imported yet; the first attribute read imports it."""

    def __getattr__(self, attribute: str) -> Any:  # called for attributes the stand-in lacks
        return getattr(importlib.import_module(self.__name__), attribute)


def lazy_module(name: str) -> ModuleType:
    """The module ``name`` (absolute), imported (with its parent packages) when an attribute of it
    is first read; the module itself when it is already imported."""
    return sys.modules.get(name) or _ModuleOnFirstUse(name)


def lazy_attributes(package: str, names_of: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """A ``__getattr__`` for ``package`` that imports each name from its submodule on first use;
    ``names_of`` maps a submodule (relative name) to the names it gives."""
    home = {name: submodule for submodule, names in names_of.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home[name]}"), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    return __getattr__
