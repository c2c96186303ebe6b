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
from mlx_server.server.chat_output import ChatPlan, ChoiceOutput
from mlx_server.server.chat_request import prepare_chat
from mlx_server.server.images import image_policy
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
from mlx_server.server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatFinishReason,
    Timings,
    Usage,
)
from mlx_server.server.routes.common import (
    ResponseMeta,
    generation_requests,
    json_response,
    parse_body,
    response_meta,
)
from mlx_server.server.routes.streaming import stream_error_events
from mlx_server.server.sampling import per_choice
from mlx_server.server.state import ready_engine, request_id, server_state
from mlx_server.server.timings import timings

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/chat/completions")
@router.post("/chat/completions")  # llama-server's alias
async def create_chat_completion(request: Request) -> Response:
    req = await parse_body(request, ChatCompletionRequest)
    engine = ready_engine(request)
    config = server_state(request).config
    prepared = await prepare_chat(engine, config.tools, req,
                                  image_policy=image_policy(config.server))
    prompt, params, plan = prepared.prompt, prepared.params, prepared.plan
    top_n = req.top_logprobs or 0
    n = req.n or 1
    meta = response_meta(engine, "chatcmpl")
    gen_requests = generation_requests(request, meta, [prompt] * n, per_choice(params, n),
                                       prepared.images)
    logger.debug("request %s is %s (%d prompt tokens, n=%d)",
                 request_id(request), meta.id, len(prompt), n)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return await _stream(request, engine, gen_requests, meta, top_n, include_usage, plan)
    return await cancel_on_disconnect(
        request, _complete(engine, gen_requests, meta, top_n, bool(req.logprobs), plan))


def _finish(out: GenerationOutput, choice: ChoiceOutput) -> ChatFinishReason:
    reason = finish_reason(out)
    return "tool_calls" if choice.called and reason == "stop" else reason


async def _complete(
    engine: EngineClient, gen_requests: list[GenerationRequest], meta: ResponseMeta,
    top_n: int, logprobs: bool, plan: ChatPlan,
) -> Response:
    streams = await _open(engine, gen_requests)
    try:
        results = await collect(streams)
    finally:
        await close_all(streams)
    choices = []
    for i, r in enumerate(results):
        if r.final is None:
            continue
        output = ChoiceOutput(plan, r.final.request_id)
        message = output.message(r.text)
        choices.append(ChatChoice(
            finish_reason=_finish(r.final, output), index=i,
            logprobs=chat_logprobs(r.logprobs, top_n) if logprobs else None, message=message))
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
    meta: ResponseMeta, top_n: int, include_usage: bool, plan: ChatPlan,
) -> Response:
    # Start (and wait for the first output of) every choice before answering, so that
    # admission errors still get their proper status instead of a 200 with an error event.
    streams = await cancel_on_disconnect(request, _open(engine, gen_requests))
    events = _events(streams, meta, top_n, include_usage, bool(gen_requests[0].sampling.logprobs),
                     [ChoiceOutput(plan, r.request_id) for r in gen_requests])
    return sse.EventStreamResponse(events, on_close=partial(close_all, streams))


def _chunk(meta: ResponseMeta, choices: list[ChatChunkChoice], usage: Usage | None = None,
           timings: Timings | None = None) -> bytes:
    return sse.event(ChatCompletionChunk(
        id=meta.id, choices=choices, created=meta.created, model=meta.model,
        system_fingerprint=meta.system_fingerprint, usage=usage, timings=timings))


async def _events(
    streams: list[EngineStream], meta: ResponseMeta, top_n: int, include_usage: bool,
    logprobs: bool, outputs: list[ChoiceOutput],
) -> AsyncIterator[bytes]:
    finals: list[GenerationOutput | None] = [None] * len(streams)
    async with stream_error_events(streams, "messages") as errors:
        for i in range(len(streams)):
            delta = ChatDelta(role="assistant", content="")
            yield _chunk(meta, [ChatChunkChoice(delta=delta, index=i)])
        async with aclosing(merged(streams)) as merged_outputs:
            async for i, out in merged_outputs:
                delta = outputs[i].feed(out.text) if out.text else None
                if delta is not None or (logprobs and out.logprobs):
                    yield _chunk(meta, [ChatChunkChoice(
                        delta=delta or ChatDelta(content=""), index=i,
                        logprobs=chat_logprobs(out.logprobs, top_n) if logprobs else None)])
                if out.finish_reason is not None:
                    check_finish(out)
                    finals[i] = out
                    if (tail := outputs[i].finish()) is not None:
                        yield _chunk(meta, [ChatChunkChoice(delta=tail, index=i)])
                    yield _chunk(meta, [ChatChunkChoice(
                        delta=ChatDelta(), finish_reason=_finish(out, outputs[i]), index=i)],
                        timings=timings(finals) if all(finals) else None)
        if include_usage:
            yield _chunk(meta, [], usage=usage([f for f in finals if f], len(finals)))
    if errors.event is not None:
        yield errors.event
    yield sse.DONE
