"""Imports deferred to first use, so that a command pays only for what it runs.

- ``deploy = lazy_module("sms_plugin.deploy")`` gives a module object whose code runs the first
  time one of its attributes is read (the standard library's ``importlib.util.LazyLoader``);
- ``__getattr__ = lazy_attributes(__name__, {"database": ["Catalog"], ...})`` lets a package
  re-export names of its submodules without importing them all when the package is imported
  (PEP 562).

Python 3.15's ``lazy import`` will make both moot.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any


def lazy_module(name: str) -> ModuleType:
    """The module ``name`` (absolute), executed when an attribute of it is first read. Its parent
    packages are imported at once (keep their ``__init__`` light)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:  # as an import does: after `import a.b`, `a.b` is the module
        setattr(sys.modules[parent], child, module)
    return module


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
