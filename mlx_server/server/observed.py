"""Watching generation from the HTTP side: metrics, each request's log line, and the
sequences in flight that a shutdown drain must end.

`ObservedEngine` wraps any `EngineClient`; its `generate` passes outputs through
unchanged while timing them. The request being served is found through a context
variable the request middleware sets, so routes need not pass anything along.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from mlx_server.engine.types import EngineClient, GenerationOutput, GenerationRequest
from mlx_server.server.metrics import Metrics

logger = logging.getLogger("mlx_server.lifecycle")


@dataclass
class RequestRecord:
    """One HTTP request as its log line reports it; generation fills in the token counts."""

    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    status: int = 0
    sequences: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    finish_reasons: list[str] = field(default_factory=list)

    def event(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": "request", "request_id": self.request_id, "method": self.method,
            "route": self.path, "status": self.status,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 1),
        }
        if self.sequences:
            out.update(prompt_tokens=self.prompt_tokens, cached_tokens=self.cached_tokens,
                       completion_tokens=self.completion_tokens,
                       ttft_ms=None if self.ttft_s is None else round(self.ttft_s * 1000, 1),
                       finish_reasons=self.finish_reasons)
        return out


CURRENT_REQUEST: ContextVar[RequestRecord | None] = ContextVar("current_request", default=None)


class Observer:
    """One per app: the metrics, the sequences in flight, and whether we are draining."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.inflight: dict[str, EngineClient] = {}
        self.draining = False
        self._abort_task: asyncio.Future[int] | None = None
        self._wrapped: tuple[EngineClient, ObservedEngine] | None = None

    def observe(self, provider: Callable[[], EngineClient | None]
                ) -> Callable[[], EngineClient | None]:
        """The provider, with what it hands out wrapped (one wrapper per engine)."""
        def observed() -> EngineClient | None:
            engine = provider()
            if engine is None:
                return None
            if self._wrapped is None or self._wrapped[0] is not engine:
                self._wrapped = (engine, ObservedEngine(engine, self))
            return self._wrapped[1]
        return observed

    def begin_drain(self, timeout_s: float, loop: asyncio.AbstractEventLoop | None,
                    signal: str = "") -> None:
        """Turn new requests away; after `timeout_s`, end the sequences still in flight.
        Safe to call from a signal handler."""
        if self.draining:
            return
        self.draining = True
        logger.info("draining: %d sequence(s) in flight, %.1fs to finish", len(self.inflight),
                    timeout_s, extra={"event": {"event": "draining", "signal": signal,
                                                "in_flight": len(self.inflight),
                                                "drain_timeout_s": timeout_s}})
        if loop is not None:
            loop.call_soon_threadsafe(loop.call_later, timeout_s, self._abort_now)

    def _abort_now(self) -> None:
        self._abort_task = asyncio.ensure_future(self.abort_all())

    async def abort_all(self, reason: str = "drain timeout") -> int:
        """End every sequence still in flight; their clients get a proper final event."""
        pending = list(self.inflight.items())
        if pending:
            logger.warning("aborting %d in-flight sequence(s): %s", len(pending), reason,
                           extra={"event": {"event": "drain_abort", "sequences": len(pending),
                                            "reason": reason}})
        for request_id, engine in pending:
            await engine.abort(request_id)
        return len(pending)


class ObservedEngine:
    """An `EngineClient` that records what passes through `generate`; all else delegates."""

    def __init__(self, inner: EngineClient, observer: Observer):
        self._inner = inner
        self._observer = observer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        record = CURRENT_REQUEST.get()
        metrics = self._observer.metrics
        self._observer.inflight[request.request_id] = self._inner
        t0 = last_t = time.perf_counter()
        seen = 0
        outputs = self._inner.generate(request)
        try:
            async for out in outputs:
                now = time.perf_counter()
                if out.completion_tokens > seen:
                    if seen == 0:
                        metrics.record_first_token(now - t0)
                        _first_token(record, now)
                    else:
                        n = out.completion_tokens - seen
                        metrics.record_token_gaps((now - last_t) / n, n)
                    seen, last_t = out.completion_tokens, now
                if out.finish_reason is not None:
                    metrics.record_finished(out, now - t0)
                    _finished(record, out)
                yield out
        finally:
            # Closing this stream closes the engine's (which aborts an unfinished sequence).
            aclose = getattr(outputs, "aclose", None)
            if aclose is not None:
                await aclose()
            self._observer.inflight.pop(request.request_id, None)


def _first_token(record: RequestRecord | None, now: float) -> None:
    if record is not None and record.ttft_s is None:
        record.ttft_s = now - record.started


def _finished(record: RequestRecord | None, out: GenerationOutput) -> None:
    if record is None:
        return
    record.sequences += 1
    record.prompt_tokens = max(record.prompt_tokens, out.prompt_tokens)
    record.cached_tokens = max(record.cached_tokens, out.cached_tokens)
    record.completion_tokens += out.completion_tokens
    record.finish_reasons.append(out.finish_reason or "")


def observer_for(provider: Callable[[], EngineClient | None]) -> Observer:
    """An observer whose metrics read the engine `provider` hands out, once there is one."""

    def model_name() -> str:
        engine = provider()
        try:
            return engine.model_info.id if engine is not None else ""
        except RuntimeError:  # still loading
            return ""

    def stats() -> dict[str, Any]:
        engine = provider()
        return engine.stats() if engine is not None else {}

    return Observer(Metrics(model_name, stats))
