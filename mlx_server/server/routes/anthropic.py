"""POST /v1/messages (Anthropic's Messages API, streamed and not) and its count_tokens.

The request is translated into a chat request and run on the chat path; the parsed output
(thought, text, tool calls) comes back as Anthropic content blocks and stream events.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlx_server.engine.types import EngineClient, GenerationOutput
from mlx_server.server import sse
from mlx_server.server.anthropic.convert import chat_request, content_block, tool_id
from mlx_server.server.anthropic.errors import error_body
from mlx_server.server.anthropic.protocol import (
    CountTokensRequest,
    Message,
    MessagesRequest,
    StopReason,
    TokenCount,
    Usage,
)
from mlx_server.server.blocks import BlockEvent
from mlx_server.server.chat_request import prepare_chat, render_chat_request
from mlx_server.server.generation import EngineStream, cancel_on_disconnect, close_all
from mlx_server.server.images import image_policy
from mlx_server.server.routes.common import (
    ResponseMeta,
    generation_requests,
    json_response,
    parse_body,
)
from mlx_server.server.routes.streaming import stream_error_events
from mlx_server.server.state import ready_engine, request_id, server_state, system_fingerprint
from mlx_server.server.turn import Turn, complete_turn, matched_stop, open_turn, stream_turn

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/messages")
async def create_message(request: Request) -> Response:
    req = await parse_body(request, MessagesRequest)
    engine = ready_engine(request)
    config = server_state(request).config
    chat, cfg = chat_request(req, config.tools)
    prepared = await prepare_chat(engine, cfg, chat, image_policy=image_policy(config.server))
    meta = ResponseMeta(f"msg_{uuid.uuid4().hex}", int(time.time()), req.model,
                        system_fingerprint(engine.model_info))
    (gen,) = generation_requests(request, meta, [prepared.prompt], [prepared.params],
                                 prepared.images)
    logger.debug("request %s is %s (%d prompt tokens)", request_id(request), meta.id,
                 len(prepared.prompt))
    turn = Turn(prepared.plan, gen.request_id)
    if req.stream:
        stream = await cancel_on_disconnect(request, open_turn(engine, gen, "messages"))
        events = _events(engine, stream, turn, meta, gen.sampling.stop, request_id(request))
        return sse.EventStreamResponse(events, on_close=partial(close_all, [stream]))

    async def complete() -> Response:
        stream = await open_turn(engine, gen, "messages")
        try:
            await complete_turn(stream, turn)
        finally:
            await close_all([stream])
        return json_response(_message(engine, turn, meta, gen.sampling.stop))

    return await cancel_on_disconnect(request, complete())


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> Response:
    req = await parse_body(request, CountTokensRequest)
    engine = ready_engine(request)
    chat, cfg = chat_request(req, server_state(request).config.tools)
    _, prompt = await render_chat_request(engine, cfg, chat)
    return json_response(TokenCount(input_tokens=len(prompt)))


def _stop_reason(engine: EngineClient, turn: Turn, stops: tuple[str, ...]
                 ) -> tuple[StopReason, str | None]:
    assert turn.final is not None
    reason = turn.stop
    if reason == "tool_calls":
        return "tool_use", None
    if reason == "length":
        return "max_tokens", None
    hit = matched_stop(engine.decode(turn.final.token_ids[-1:]), stops) if stops else None
    return ("stop_sequence", hit) if hit else ("end_turn", None)


def _usage(out: GenerationOutput) -> Usage:
    return Usage(input_tokens=out.prompt_tokens - out.cached_tokens,
                 cache_read_input_tokens=out.cached_tokens, output_tokens=out.completion_tokens)


def _message(engine: EngineClient, turn: Turn, meta: ResponseMeta, stops: tuple[str, ...]
             ) -> Message:
    assert turn.final is not None
    reason, sequence = _stop_reason(engine, turn, stops)
    return Message(id=meta.id, content=[content_block(b) for b in turn.blocks], model=meta.model,
                   stop_reason=reason, stop_sequence=sequence, usage=_usage(turn.final))


def _block_event(event: BlockEvent) -> dict[str, Any]:
    block, index = event.block, event.block.index
    if event.kind == "stop":
        return {"type": "content_block_stop", "index": index}
    if event.kind == "start":
        starts: dict[str, dict[str, Any]] = {
            "thinking": {"type": "thinking", "thinking": "", "signature": ""},
            "text": {"type": "text", "text": ""},
            "tool_use": {"type": "tool_use", "id": tool_id(block.id), "name": block.name,
                         "input": {}},
        }
        start = starts[block.type]
        return {"type": "content_block_start", "index": index, "content_block": start}
    delta = {"thinking": {"type": "thinking_delta", "thinking": event.text},
             "text": {"type": "text_delta", "text": event.text},
             "tool_use": {"type": "input_json_delta", "partial_json": event.text}}[block.type]
    return {"type": "content_block_delta", "index": index, "delta": delta}


async def _events(
    engine: EngineClient, stream: EngineStream, turn: Turn, meta: ResponseMeta,
    stops: tuple[str, ...], rid: str,
) -> AsyncIterator[bytes]:
    """message_start, ping, the blocks' start/delta/stop, message_delta, message_stop."""
    started = False
    async with stream_error_events([stream], "messages") as errors:
        async for out, events in stream_turn(stream, turn):
            if not started:
                started = True
                message = Message(id=meta.id, content=[], model=meta.model, stop_reason=None,
                                  stop_sequence=None, usage=_usage(out))
                yield sse.named_event({"type": "message_start",
                                       "message": message.model_dump(mode="json")})
                yield sse.named_event({"type": "ping"})
            for event in events:
                yield sse.named_event(_block_event(event))
        assert turn.final is not None
        reason, sequence = _stop_reason(engine, turn, stops)
        yield sse.named_event({
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": _usage(turn.final).model_dump(mode="json")})
        yield sse.named_event({"type": "message_stop"})
    if errors.error is not None:
        yield sse.named_event(error_body(errors.error, rid).model_dump(mode="json",
                                                                        exclude_none=True))
