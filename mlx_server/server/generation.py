"""Running a request's n sequences on the engine: start them, merge or collect their
outputs, and make sure every sequence that is not finished gets aborted, whatever way
the request ends (client gone, error, cancellation)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import anyio
from fastapi import Request

from mlx_server.engine.types import (
    EngineClient,
    EngineError,
    GenerationOutput,
    GenerationRequest,
    TokenLogprob,
)
from mlx_server.server.errors import APIError, ClientDisconnected
from mlx_server.server.protocol import (
    CompletionTokensDetails,
    PromptTokensDetails,
    Usage,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


class EngineStream:
    """One sequence. `start()` waits for the first output, so admission errors (queue full,
    prompt too long) surface before any HTTP response has begun."""

    def __init__(self, engine: EngineClient, request: GenerationRequest):
        self.engine = engine
        self.request = request
        self.finished = False
        self._closed = False
        self._iter: AsyncIterator[GenerationOutput] | None = None
        self._first: GenerationOutput | None = None

    async def start(self) -> None:
        self._iter = self.engine.generate(self.request)
        self._first = await self._next_from_engine()

    async def next(self) -> GenerationOutput:
        out, self._first = self._first, None
        if out is None:
            out = await self._next_from_engine()
        if out.finish_reason is not None:
            self.finished = True
        return out

    async def _next_from_engine(self) -> GenerationOutput:
        assert self._iter is not None
        try:
            return await self._iter.__anext__()
        except StopAsyncIteration:
            raise EngineError("the engine ended a sequence without a finish reason") from None

    async def close(self) -> None:
        """Close the engine's iterator, aborting the sequence if it has not finished.
        Shielded: this runs while the request is being cancelled."""
        if self._iter is None or self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            aclose = getattr(self._iter, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # an engine bug must not hide the abort below
                    logger.exception("closing sequence %s failed", self.request.request_id)
            if not self.finished:
                # Closing aborts in the engine; an explicit abort also covers an iterator
                # that was interrupted mid-await and could not run its own cleanup.
                await self.engine.abort(self.request.request_id)


async def close_all(streams: Sequence[EngineStream]) -> None:
    for stream in streams:
        await stream.close()


async def open_streams(
    engine: EngineClient, requests: list[GenerationRequest]
) -> list[EngineStream]:
    """Start every sequence concurrently; if one fails, abort the others and re-raise."""
    streams = [EngineStream(engine, r) for r in requests]
    if len(streams) == 1:
        await _guarded(streams, streams[0].start())
        return streams
    tasks = [asyncio.ensure_future(s.start()) for s in streams]
    await _guarded(streams, _all_or_nothing(tasks))
    return streams


async def _all_or_nothing(tasks: Sequence[asyncio.Future[None]]) -> None:
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _guarded(streams: Sequence[EngineStream], work: Awaitable[T]) -> T:
    try:
        return await work
    except BaseException:
        await close_all(streams)
        raise


async def merged(
    streams: list[EngineStream],
) -> AsyncGenerator[tuple[int, GenerationOutput], None]:
    """Outputs of all sequences as they come, tagged with the sequence's index.
    The caller closes the streams; pumps are cancelled when iteration stops."""
    if len(streams) == 1:
        while not streams[0].finished:
            yield 0, await streams[0].next()
        return
    queue: asyncio.Queue[tuple[int, GenerationOutput | BaseException]] = asyncio.Queue()

    async def pump(i: int) -> None:
        try:
            while not streams[i].finished:
                await queue.put((i, await streams[i].next()))
        except Exception as exc:
            await queue.put((i, exc))

    tasks = [asyncio.ensure_future(pump(i)) for i in range(len(streams))]
    try:
        while not all(s.finished for s in streams) or not queue.empty():
            i, item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield i, item
    finally:
        with anyio.CancelScope(shield=True):
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class SequenceResult:
    """Everything one sequence produced, for non-streaming responses."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    final: GenerationOutput | None = None  # the last output, with usage counts


async def collect(streams: list[EngineStream]) -> list[SequenceResult]:
    results = [SequenceResult() for _ in streams]
    parts: list[list[str]] = [[] for _ in streams]
    async with aclosing(merged(streams)) as outputs:
        async for i, out in outputs:
            parts[i].append(out.text)
            results[i].logprobs.extend(out.logprobs)
            if out.finish_reason is not None:
                check_finish(out)
                results[i].final = out
    for result, texts in zip(results, parts, strict=True):
        result.text = "".join(texts)
    return results


def check_finish(out: GenerationOutput) -> None:
    """Engine-side failures reported as a finish reason become errors for the client."""
    if out.finish_reason == "error":
        logger.error("sequence %s failed in the engine: %s", out.request_id, out.error)
        raise APIError(500, "The engine failed while generating.", "server_error")
    if out.finish_reason == "abort":
        raise APIError(503, "The request was aborted by the server.", "unavailable_error",
                       code="aborted")


def finish_reason(out: GenerationOutput) -> Literal["stop", "length"]:
    """For outputs `check_finish` let through. OpenAI has no "timeout": the output was cut
    short, which is what "length" means."""
    return "stop" if out.finish_reason == "stop" else "length"


def usage(finals: Sequence[GenerationOutput], n: int = 1) -> Usage:
    """Totals over sequences, in choice order. The n choices of one prompt bill that prompt
    once, as OpenAI does; its cached part is what every one of them found in the cache."""
    groups = [finals[k:k + n] for k in range(0, len(finals), n)]
    prompt = sum(g[0].prompt_tokens for g in groups)
    cached = sum(min(o.cached_tokens for o in g) for g in groups)
    completion = sum(o.completion_tokens for o in finals)
    return Usage(
        completion_tokens=completion,
        prompt_tokens=prompt,
        total_tokens=prompt + completion,
        completion_tokens_details=CompletionTokensDetails(),
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, but cancel it (which aborts its sequences) if the client goes away."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise ClientDisconnected()
    return task.result()


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next message the server sends is the disconnect;
    # waiting on it costs nothing, unlike polling `request.is_disconnected()`.
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.1)  # a server repeating other messages must not spin the loop
