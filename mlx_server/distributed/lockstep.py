"""The engine core in lockstep across ranks.

Each rank runs the same `EngineCore`. Its decisions (admission, prefix reuse, prefill
chunking, stops) are functions of its inputs and of the tokens sampled, which the
sharded model makes identical on every rank; so rank 0 broadcasts only the inputs of
each step, right where the core reads them: the requests that arrived, the aborts, and
the sequences whose deadline passed. What would differ between ranks is replaced by
rank 0's value: the KV budget (pipeline stages hold different layers), a prefix-cache
entry's size (counted from its token count, not its local arrays), and random seeds.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import EngineConfig
from ..engine.core import EngineCore
from ..engine.loader import LoadedModel
from ..engine.prefix_cache import PrefixCache
from ..engine.types import GenerationOutput, GenerationRequest
from .channel import Broadcast

log = logging.getLogger("mlx_server.distributed")


@dataclass
class StepInputs:
    """What rank 0 tells the other ranks before one engine step."""

    new: list[GenerationRequest] = field(default_factory=list)
    aborts: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    reset: bool = False  # rank 0's last step failed: drop every sequence first, as it did
    stop: bool = False  # rank 0 is shutting down


class LockstepCore(EngineCore):
    """Shared by both roles: rank 0's budget everywhere, sizes that do not depend on the rank."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig, channel: Broadcast):
        super().__init__(loaded, config)  # runs one forward pass: every rank, same order
        self.channel = channel
        self.budget = channel.share(self.budget if channel.rank == 0 else None)
        size = self.budget.bytes_for
        self.prefix = PrefixCache(self.budget.total if config.enable_prefix_cache else 0,
                                  sizeof=lambda tokens, cache: size(len(tokens)))
        self._expired: list[str] = []

    def _expire(self) -> None:
        for rid in self._expired:
            self._finish_by_id(rid, "timeout", "The request exceeded its timeout.")
        self._expired = []

    def _apply_aborts(self, aborts: list[str]) -> None:
        for rid in aborts:  # sorted: set order differs between processes
            self._finish_by_id(rid, "abort")


class LeaderCore(LockstepCore):
    """Rank 0: serves HTTP through `AsyncEngine` and broadcasts each step's inputs."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig, channel: Broadcast):
        super().__init__(loaded, config, channel)
        self._reset_pending = False

    def submit(self, request: GenerationRequest, emit: Any, matcher: Any = None) -> None:
        sp = request.sampling
        if sp.temperature > 0.0 and sp.seed is None:  # every rank must draw the same numbers
            request = replace(request, sampling=sp.replace(seed=secrets.randbits(63)))
        super().submit(request, emit, matcher)

    def _drain_inbox(self) -> None:
        with self._lock:
            new = list(self._inbox)
            self._inbox.clear()
            aborts, self._aborts = sorted(self._aborts), set()
        self.channel.share(StepInputs([s.request for s in new], aborts, self._deadlines(new),
                                      reset=self._reset_pending), stream=self.gen.stream)
        self._reset_pending = False
        self.waiting.extend(new)
        self._apply_aborts(aborts)

    def _deadlines(self, new: list[Any]) -> list[str]:
        now = time.perf_counter()
        seqs = (*self.waiting, *self.running.values(), *new)
        self._expired = [s.request_id for s in seqs if s.deadline_passed(now)]
        return self._expired

    def reset_generator(self) -> None:
        super().reset_generator()
        self._reset_pending = True

    def stop_followers(self) -> None:
        self.channel.share(StepInputs(stop=True), stream=self.gen.stream)


class FollowerCore(LockstepCore):
    """Ranks > 0: no HTTP; each step's inputs come from rank 0."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig, channel: Broadcast):
        # Rank 0 already admitted these requests to its queue: never refuse one here.
        super().__init__(loaded, replace(config, max_queue=1 << 30), channel)
        self._inputs = StepInputs()

    def follow(self) -> None:
        """Step whenever rank 0 does, until it says stop."""
        failed = False
        while True:
            inputs: StepInputs = self.channel.share(stream=self.gen.stream)
            if inputs.stop:
                return
            if failed and not inputs.reset:
                raise RuntimeError("a step failed on this rank but not on rank 0: the ranks "
                                   "have diverged")
            if inputs.reset:
                self.fail_all("rank 0 reset the batch")
                super().reset_generator()
            self._inputs, failed = inputs, False
            try:
                self.step()
            except Exception:  # if rank 0 failed it too, its reset flag comes next
                log.exception("engine step failed on this rank")
                failed = True

    def _drain_inbox(self) -> None:
        inputs = self._inputs
        for request in inputs.new:
            g = request.sampling.grammar
            self.submit(request, _discard, self.grammars.compile(g) if g is not None else None)
        with self._lock:
            self.waiting.extend(self._inbox)
            self._inbox.clear()
        self._apply_aborts(inputs.aborts)
        self._expired = list(inputs.expired)


def _discard(_: GenerationOutput) -> None:
    """Followers produce the same text as rank 0; only rank 0 sends it anywhere."""
