"""Lazy re-exports for package ``__init__`` modules (PEP 562): ``from graphrec.train import
Trainer`` imports graphrec.train.trainer on first use, so that importing one light submodule
(a config, the work-directory layout) does not load torch and the whole subpackage."""

from __future__ import annotations

import importlib
import sys


def exports(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """{module: names} -> {name: module}."""
    return {name: module for module, names in table.items() for name in names}


def load(package: str, table: dict[str, str], name: str) -> object:
    """The attribute ``name`` of ``package``, imported from its module in ``table`` and cached
    on the package."""
    module = table.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    setattr(sys.modules[package], name, value)
    return value
