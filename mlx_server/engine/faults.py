"""Fault injection for reliability tests, off unless `MLX_SERVER_FAULT_INJECT` is set.

`MLX_SERVER_FAULT_INJECT=seed=<n>[,after=<k>]` makes every sequence whose sampling seed is
<n> raise inside the engine step once it has generated <k> tokens (default 1), so a test
can fail one chosen request over real HTTP while others share its batch. Unset (the normal
case) this module costs one `None` check per generated token.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

ENV = "MLX_SERVER_FAULT_INJECT"
log = logging.getLogger("mlx_server.engine")


class InjectedFault(RuntimeError):
    """Raised on purpose by the fault injector; never seen unless the variable is set."""


@dataclass(frozen=True)
class FaultInjector:
    seed: int
    after: int = 1

    def check(self, seq: Any) -> None:
        """Raise for the chosen sequence once it has `after` tokens (seq: engine Sequence)."""
        if seq.request.sampling.seed == self.seed and seq.completion_tokens >= self.after:
            raise InjectedFault(f"fault injected into {seq.request_id} ({ENV})")


def from_env(environ: dict[str, str] | None = None) -> FaultInjector | None:
    spec = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not spec:
        return None
    fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
    try:
        injector = FaultInjector(int(fields["seed"]), int(fields.get("after", 1)))
    except (KeyError, ValueError):
        raise ValueError(f"{ENV} must look like 'seed=<int>[,after=<int>]', not {spec!r}")
    log.warning("fault injection is on: %s", injector)
    return injector
