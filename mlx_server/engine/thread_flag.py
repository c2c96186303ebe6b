"""A boolean per thread, set for the span of a `with` block.

The engine steps its generator on its own thread; switches that change how mlx-lm's
batch code behaves for one engine (step_logprobs.py, deferred_step.py) must not leak
into another engine's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ThreadFlag:
    def __init__(self) -> None:
        self._local = threading.local()

    def __bool__(self) -> bool:
        return getattr(self._local, "on", False)

    @contextmanager
    def set(self, on: bool) -> Iterator[None]:
        before = bool(self)
        self._local.on = on
        try:
            yield
        finally:
            self._local.on = before
