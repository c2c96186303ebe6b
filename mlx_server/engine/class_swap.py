"""Swap a layer's class for a subclass with a faster `__call__`, only where the original
`__call__` is exactly the one line the replacement was written against.

norm_scale.py and gelu_gate.py rewrite one line of mlx-lm's model code each. Matching
the source line (not the class name) means a model whose layer does anything else, or
an mlx-lm release that changes the line, keeps its own code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mlx import nn


class ClassSwap:
    """Subclasses of every class whose `__call__` body is `line`, with `call` instead."""

    def __init__(self, line: str, call: Callable[..., Any]) -> None:
        self.line = line
        self.call = call
        self._subclasses: dict[type, type | None] = {}

    def _subclass(self, cls: type) -> type | None:
        if cls not in self._subclasses:
            try:
                body = [s.strip() for s in inspect.getsource(cls.__call__).splitlines()]
            except (OSError, TypeError):  # built in, or no source on disk
                body = []
            code = [s for s in body if s and not s.startswith(("def ", "#", '"""'))]
            self._subclasses[cls] = (type(cls.__name__, (cls,), {"__call__": self.call})
                                     if code == [self.line] else None)
        return self._subclasses[cls]

    def swapped(self, module: nn.Module) -> bool:
        return type(module) in self._subclasses.values()

    def install(self, model: nn.Module, prepare: Callable[[Any], None] | None = None) -> int:
        """Swap every matching module in `model` (`prepare` runs on each); returns how many."""
        n = 0
        for _, module in model.named_modules():
            if self.swapped(module):
                continue
            sub = self._subclass(type(module))
            if sub is not None:
                module.__class__ = sub
                if prepare is not None:
                    prepare(module)
                n += 1
        return n

    def uninstall(self, model: nn.Module, forget: tuple[str, ...] = ()) -> int:
        """Give every swapped module its own class back, dropping the instance attributes
        named in `forget`; returns how many."""
        return revert(model, *(c for c in self._subclasses.values() if c), forget=forget)


def revert(model: nn.Module, *classes: type, forget: tuple[str, ...] = ()) -> int:
    """Give every module of exactly one of `classes` its base class back (the swaps here,
    and cpu_blocked.py's and proj_fuse.py's of nn.Linear), dropping the instance
    attributes named in `forget`; returns how many."""
    n = 0
    for _, module in model.named_modules():
        if type(module) in classes:
            module.__class__ = type(module).__bases__[0]
            for name in forget:
                module.__dict__.pop(name, None)
            n += 1
    return n
