"""Lazy name -> class registries: a parser's module is imported only when it is asked for."""

from __future__ import annotations

import importlib
from typing import Any


def load_registered(package: str, registry: dict[str, str], name: str, kind: str) -> Any:
    """An instance of the class registered as `name` ("module:Class" under `package`).

    Raises ValueError naming the choices when `name` is unknown; the names are
    user-facing flag values.
    """
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(registry)}")
    module_name, class_name = registry[name].split(":")
    module = importlib.import_module(f"{package}.{module_name}")
    return getattr(module, class_name)()
