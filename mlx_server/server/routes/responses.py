"""POST /v1/responses (OpenAI's Responses API, streamed and not), and GET/DELETE of stored ones.

The input items are translated into a chat request and run on the chat path; the parsed
output (thought, text, tool calls) comes back as output items and Responses stream events.
Stateless unless `store: true`, whose responses a later `previous_response_id` continues.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlx_server.config import ToolConfig
from mlx_server.engine.types import EngineClient
from mlx_server.server import sse
from mlx_server.server.blocks import Block, BlockEvent
from mlx_server.server.chat_request import PreparedChat, prepare_chat
from mlx_server.server.errors import APIError, invalid
from mlx_server.server.generation import EngineStream, cancel_on_disconnect, close_all
from mlx_server.server.images import image_policy
from mlx_server.server.protocol import ChatCompletionRequest
from mlx_server.server.responses.convert import (
    ItemIds,
    Messages,
    assistant_turn,
    chat_request,
    function_tools,
    input_messages,
    new_id,
    output_item,
)
from mlx_server.server.responses.protocol import (
    DeletedResponse,
    InputTokensDetails,
    OutputText,
    ReasoningText,
    ResponseError,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
)
from mlx_server.server.responses.store import (
    CAPACITY,
    ResponseStore,
    StoredResponse,
    response_store,
)
from mlx_server.server.routes.common import (
    ResponseMeta,
    generation_requests,
    json_response,
    parse_body,
)
from mlx_server.server.routes.streaming import stream_error_events
from mlx_server.server.state import ready_engine, request_id, server_state
from mlx_server.server.turn import Turn, complete_turn, open_turn, stream_turn
from mlx_server.vision.images import ImagePolicy

logger = logging.getLogger(__name__)
router = APIRouter()
Finish = Callable[[ResponseObject, list[Block]], None]


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    req = await parse_body(request, ResponsesRequest)
    engine = ready_engine(request)
    store = response_store(request)
    history = _previous(store, req.previous_response_id) + input_messages(req)
    config = server_state(request).config
    chat, cfg = chat_request(req, history, config.tools)
    prepared = await _prepare(engine, cfg, chat, image_policy(config.server))
    base = _base(req, engine, new_id("resp"))
    meta = ResponseMeta(base.id, base.created_at, base.model, "")
    (gen,) = generation_requests(request, meta, [prepared.prompt], [prepared.params],
                                 prepared.images)
    logger.debug("request %s is %s (%d prompt tokens)", request_id(request), base.id,
                 len(prepared.prompt))
    turn, ids = Turn(prepared.plan, gen.request_id), ItemIds()
    finish: Finish = partial(_keep, store, history) if req.store else (lambda r, b: None)
    if req.stream:
        stream = await cancel_on_disconnect(request, open_turn(engine, gen, "input"))
        events = _events(stream, turn, ids, base, finish)
        return sse.EventStreamResponse(events, on_close=partial(close_all, [stream]))

    async def complete() -> Response:
        stream = await open_turn(engine, gen, "input")
        try:
            await complete_turn(stream, turn)
        finally:
            await close_all([stream])
        final = _final(base, turn, ids)
        finish(final, turn.blocks)
        return json_response(final)

    return await cancel_on_disconnect(request, complete())


@router.get("/v1/responses/{response_id}")
async def get_response(request: Request, response_id: str) -> Response:
    item = response_store(request).get(response_id)
    if item is None:
        raise _not_found(response_id)
    return json_response(item.response)


@router.delete("/v1/responses/{response_id}")
async def delete_response(request: Request, response_id: str) -> Response:
    if not response_store(request).delete(response_id):
        raise _not_found(response_id)
    return json_response(DeletedResponse(id=response_id))


def _not_found(response_id: str) -> APIError:
    return APIError(404, f"No response with id '{response_id}' is stored.", param="response_id",
                    code="not_found")


def _previous(store: ResponseStore, response_id: str | None) -> Messages:
    if response_id is None:
        return []
    item = store.get(response_id)
    if item is None:
        raise invalid(f"Previous response with id '{response_id}' not found: this server keeps "
                      f"only responses created with `store: true`, the last {CAPACITY} of them, "
                      "in memory until it restarts.", "previous_response_id",
                      "previous_response_not_found")
    return list(item.messages)


async def _prepare(engine: EngineClient, cfg: ToolConfig, chat: ChatCompletionRequest,
                   policy: ImagePolicy) -> PreparedChat:
    try:
        return await prepare_chat(engine, cfg, chat, "input", policy)
    except APIError as exc:  # the chat path names chat messages; here they are input items
        if exc.detail.param and exc.detail.param.startswith("messages"):
            exc.detail.param = "input"
        raise


def _keep(store: ResponseStore, history: Messages, final: ResponseObject,
          blocks: list[Block]) -> None:
    store.put(StoredResponse(final, history + [assistant_turn(blocks)]))


def _base(req: ResponsesRequest, engine: EngineClient, response_id: str) -> ResponseObject:
    """The response as it stands before any output: what `response.created` carries."""
    return ResponseObject(
        id=response_id, created_at=int(time.time()), status="in_progress",
        instructions=req.instructions, max_output_tokens=req.max_output_tokens,
        model=req.model or engine.model_info.id,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        previous_response_id=req.previous_response_id,
        reasoning=req.reasoning.model_dump(exclude_none=True) if req.reasoning else {},
        store=bool(req.store), temperature=req.temperature,
        text={"format": req.text.format if req.text and req.text.format else {"type": "text"}},
        tool_choice=req.tool_choice or "auto", tools=function_tools(req.tools or []),
        top_p=req.top_p, user=req.user, metadata=req.metadata or {})


def _final(base: ResponseObject, turn: Turn, ids: ItemIds) -> ResponseObject:
    out = turn.final
    assert out is not None
    cut = turn.stop == "length"
    return base.model_copy(update={
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "output": [output_item(b, ids(b)) for b in turn.blocks],
        "usage": ResponseUsage(
            input_tokens=out.prompt_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=out.cached_tokens),
            output_tokens=out.completion_tokens,
            total_tokens=out.prompt_tokens + out.completion_tokens)})


def _block_events(event: BlockEvent, item_id: str) -> list[dict[str, Any]]:
    """The Responses events for one block event (the block's output item and its parts)."""
    block = event.block
    where: dict[str, Any] = {"item_id": item_id, "output_index": block.index}
    part = {"text": OutputText(text=block.text), "thinking": ReasoningText(text=block.text),
            "tool_use": None}[block.type]
    text_where = {**where, "content_index": 0}
    if event.kind == "start":
        item = output_item(block, item_id, "in_progress").model_dump(mode="json")
        events = [{"type": "response.output_item.added", "output_index": block.index,
                   "item": item}]
        if part is not None:  # empty: the block's text may already hold the first delta
            events.append({"type": "response.content_part.added", **text_where,
                           "part": part.model_copy(update={"text": ""}).model_dump(mode="json")})
        return events
    if event.kind == "delta":
        if block.type == "tool_use":
            return [{"type": "response.function_call_arguments.delta", **where,
                     "delta": event.text}]
        if block.type == "thinking":
            return [{"type": "response.reasoning_text.delta", **text_where, "delta": event.text}]
        return [{"type": "response.output_text.delta", **text_where, "delta": event.text,
                 "logprobs": []}]
    done = output_item(block, item_id).model_dump(mode="json")
    if block.type == "tool_use":
        events = [{"type": "response.function_call_arguments.done", **where,
                   "name": block.name, "arguments": done["arguments"]}]
    else:
        kind = "reasoning_text" if block.type == "thinking" else "output_text"
        events = [{"type": f"response.{kind}.done", **text_where, "text": block.text},
                  {"type": "response.content_part.done", **text_where,
                   "part": part.model_dump(mode="json") if part is not None else None}]
        if block.type == "text":
            events[0]["logprobs"] = []
    return events + [{"type": "response.output_item.done", "output_index": block.index,
                      "item": done}]


async def _events(stream: EngineStream, turn: Turn, ids: ItemIds, base: ResponseObject,
                  finish: Finish) -> AsyncIterator[bytes]:
    """created, in_progress, each item's events, then completed (or incomplete, or failed),
    numbered by `sequence_number`."""
    sequence = 0

    def emit(payload: dict[str, Any]) -> bytes:
        nonlocal sequence
        payload["sequence_number"], sequence = sequence, sequence + 1
        return sse.named_event(payload)

    snapshot = base.model_dump(mode="json")
    yield emit({"type": "response.created", "response": snapshot})
    yield emit({"type": "response.in_progress", "response": snapshot})
    async with stream_error_events([stream], "input") as errors:
        async for _, events in stream_turn(stream, turn):
            for event in events:
                for payload in _block_events(event, ids(event.block)):
                    yield emit(payload)
        final = _final(base, turn, ids)
        finish(final, turn.blocks)
        yield emit({"type": f"response.{final.status}", "response": final.model_dump(mode="json")})
    if errors.error is not None:
        error = ResponseError(code="server_error" if errors.error.status >= 500
                              else errors.error.detail.code or "invalid_request",
                              message=errors.error.detail.message)
        failed = base.model_copy(update={"status": "failed", "error": error})
        yield emit({"type": "response.failed", "response": failed.model_dump(mode="json")})
