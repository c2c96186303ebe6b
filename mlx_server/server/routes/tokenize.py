"""POST /tokenize, /detokenize and /apply-template, as llama-server has them.

They only ever turn the request's own text into tokens and back: nothing here reads a
file or fetches a URL.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from mlx_server.engine.types import EngineClient, EngineError
from mlx_server.server.errors import from_engine_error, invalid
from mlx_server.server.messages import normalize_messages, template_inputs
from mlx_server.server.protocol import (
    ChatCompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenPiece,
)
from mlx_server.server.routes.common import json_response, parse_body, tokenize_off_loop
from mlx_server.server.state import ready_engine

router = APIRouter()


@router.post("/tokenize")
async def tokenize(request: Request) -> Response:
    req = await parse_body(request, TokenizeRequest)
    engine = ready_engine(request)
    ids = await tokenize_off_loop(engine.encode, req.content, req.add_special)
    if not req.with_pieces:
        return json_response(TokenizeResponse(tokens=ids))
    pieces = await tokenize_off_loop(_pieces, engine, ids)
    return json_response(TokenizeResponse(tokens=pieces))


def _pieces(engine: EngineClient, ids: list[int]) -> list[TokenPiece]:
    return [TokenPiece(id=i, piece=engine.decode([i])) for i in ids]


@router.post("/detokenize")
async def detokenize(request: Request) -> Response:
    req = await parse_body(request, DetokenizeRequest)
    engine = ready_engine(request)
    vocab = engine.model_info.vocab_size
    if any(t < 0 or t >= vocab for t in req.tokens):
        raise invalid(f"Invalid value for 'tokens': ids must be in [0, {vocab}).", "tokens")
    text = await tokenize_off_loop(engine.decode, req.tokens)
    return json_response(DetokenizeResponse(content=text))


@router.post("/apply-template")
async def apply_template(request: Request) -> JSONResponse:
    """The prompt a chat request would be given, as text; the body is a chat request."""
    req = await parse_body(request, ChatCompletionRequest)
    engine = ready_engine(request)
    tools, template_kwargs = template_inputs(req)
    messages = normalize_messages(req.messages)
    try:
        ids = await tokenize_off_loop(engine.render_chat, messages, tools, template_kwargs)
    except EngineError as exc:
        raise from_engine_error(exc, "messages") from exc
    prompt = await tokenize_off_loop(engine.decode, ids)
    return JSONResponse({"prompt": prompt})
