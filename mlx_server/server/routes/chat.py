"""POST /v1/chat/completions, streamed and not."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from functools import partial

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlx_server.engine.types import (
    EngineClient,
    EngineError,
    GenerationOutput,
    GenerationRequest,
)
from mlx_server.server import sse
from mlx_server.server.errors import from_engine_error
from mlx_server.server.generation import (
    EngineStream,
    cancel_on_disconnect,
    check_finish,
    close_all,
    collect,
    finish_reason,
    merged,
    open_streams,
    usage,
)
from mlx_server.server.logprobs import chat_logprobs
from mlx_server.server.messages import normalize_messages, template_inputs
from mlx_server.server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ResponseMessage,
    Timings,
    Usage,
)
from mlx_server.server.routes.common import (
    ResponseMeta,
    generation_requests,
    json_response,
    parse_body,
    response_meta,
    tokenize_off_loop,
)
from mlx_server.server.routes.streaming import stream_error_events
from mlx_server.server.sampling import per_choice, resolve_max_tokens, sampling_params
from mlx_server.server.state import ready_engine, request_id
from mlx_server.server.timings import timings

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/chat/completions")
@router.post("/chat/completions")  # llama-server's alias
async def create_chat_completion(request: Request) -> Response:
    req = await parse_body(request, ChatCompletionRequest)
    engine = ready_engine(request)
    tools, template_kwargs = template_inputs(req)
    messages = normalize_messages(req.messages)
    try:
        prompt = await tokenize_off_loop(engine.render_chat, messages, tools, template_kwargs)
        info = engine.model_info
        max_tokens = resolve_max_tokens(req.max_completion_tokens or req.max_tokens,
                                        len(prompt), info.ctx_size)
    except EngineError as exc:
        raise from_engine_error(exc, "messages") from exc
    top_n = req.top_logprobs or 0
    params = sampling_params(req, max_tokens=max_tokens, vocab_size=info.vocab_size,
                             top_logprobs=top_n if req.logprobs else None)
    n = req.n or 1
    meta = response_meta(engine, "chatcmpl")
    gen_requests = generation_requests(request, meta, [prompt] * n, per_choice(params, n))
    logger.debug("request %s is %s (%d prompt tokens, n=%d)",
                 request_id(request), meta.id, len(prompt), n)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return await _stream(request, engine, gen_requests, meta, top_n, include_usage)
    return await cancel_on_disconnect(
        request, _complete(engine, gen_requests, meta, top_n, bool(req.logprobs)))


async def _complete(
    engine: EngineClient, gen_requests: list[GenerationRequest], meta: ResponseMeta,
    top_n: int, logprobs: bool,
) -> Response:
    streams = await _open(engine, gen_requests)
    try:
        results = await collect(streams)
    finally:
        await close_all(streams)
    choices = [
        ChatChoice(
            finish_reason=finish_reason(r.final),
            index=i,
            logprobs=chat_logprobs(r.logprobs, top_n) if logprobs else None,
            message=ResponseMessage(content=r.text),
        )
        for i, r in enumerate(results)
        if r.final is not None
    ]
    body = ChatCompletionResponse(
        id=meta.id, choices=choices, created=meta.created, model=meta.model,
        system_fingerprint=meta.system_fingerprint,
        usage=usage([r.final for r in results if r.final is not None], len(results)),
        timings=timings([r.final for r in results]),
    )
    return json_response(body)


async def _open(engine: EngineClient, gen_requests: list[GenerationRequest]) -> list[EngineStream]:
    try:
        return await open_streams(engine, gen_requests)
    except EngineError as exc:
        raise from_engine_error(exc, "messages") from exc


async def _stream(
    request: Request, engine: EngineClient, gen_requests: list[GenerationRequest],
    meta: ResponseMeta, top_n: int, include_usage: bool,
) -> Response:
    # Start (and wait for the first output of) every choice before answering, so that
    # admission errors still get their proper status instead of a 200 with an error event.
    streams = await cancel_on_disconnect(request, _open(engine, gen_requests))
    events = _events(streams, meta, top_n, include_usage, bool(gen_requests[0].sampling.logprobs))
    return sse.EventStreamResponse(events, on_close=partial(close_all, streams))


def _chunk(meta: ResponseMeta, choices: list[ChatChunkChoice], usage: Usage | None = None,
           timings: Timings | None = None) -> bytes:
    return sse.event(ChatCompletionChunk(
        id=meta.id, choices=choices, created=meta.created, model=meta.model,
        system_fingerprint=meta.system_fingerprint, usage=usage, timings=timings))


async def _events(
    streams: list[EngineStream], meta: ResponseMeta, top_n: int, include_usage: bool,
    logprobs: bool,
) -> AsyncIterator[bytes]:
    finals: list[GenerationOutput | None] = [None] * len(streams)
    async with stream_error_events(streams, "messages") as errors:
        for i in range(len(streams)):
            delta = ChatDelta(role="assistant", content="")
            yield _chunk(meta, [ChatChunkChoice(delta=delta, index=i)])
        async with aclosing(merged(streams)) as outputs:
            async for i, out in outputs:
                if out.text or out.logprobs:
                    yield _chunk(meta, [ChatChunkChoice(
                        delta=ChatDelta(content=out.text), index=i,
                        logprobs=chat_logprobs(out.logprobs, top_n) if logprobs else None)])
                if out.finish_reason is not None:
                    check_finish(out)
                    finals[i] = out
                    yield _chunk(meta, [ChatChunkChoice(
                        delta=ChatDelta(), finish_reason=finish_reason(out), index=i)],
                        timings=timings(finals) if all(finals) else None)
        if include_usage:
            yield _chunk(meta, [], usage=usage([f for f in finals if f], len(finals)))
    if errors.event is not None:
        yield errors.event
    yield sse.DONE
