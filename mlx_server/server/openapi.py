"""The OpenAPI document at /openapi.json: FastAPI's paths, plus what FastAPI cannot see.

Routes read their bodies themselves (strict JSON whatever the Content-Type, errors in the
endpoint's own shape), so FastAPI knows neither the request bodies nor the answers. They
are declared here from the protocol models: the body, the 200 (JSON, or SSE when the
request streams) and every error status the endpoint can give, each in its shape.
`tests/reliability/test_schemathesis.py` fuzzes the app against this document.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from mlx_server.server import protocol as p
from mlx_server.server.anthropic import protocol as anthropic
from mlx_server.server.responses import protocol as responses

REF = "#/components/schemas/{model}"
OPENAI_ERROR = {"$ref": REF.format(model="ErrorResponse")}
ANTHROPIC_ERROR = {"$ref": REF.format(model="ErrorBody")}
# llama-server's shape (a numeric code), which /health and /slots answer.
LLAMA_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message", "type"],
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                   "type": {"type": "string"}}}}}
_TYPED = {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}}


def _sse(data: dict[str, Any], done: bool) -> dict[str, Any]:
    """One event of a stream: `data` is JSON matching `data` (or OpenAI's `[DONE]`)."""
    payload: dict[str, Any] = {"type": "string", "contentMediaType": "application/json",
                               "contentSchema": data}
    if done:
        payload = {"anyOf": [{"const": "[DONE]"}, payload]}
    return {"text/event-stream": {"schema": {"type": "object", "required": ["data"],
                                             "properties": {"data": payload}}}}


def _openai_stream(chunk: type[BaseModel]) -> dict[str, Any]:
    # A failure after the 200 is an error event in the error body's shape.
    return _sse({"anyOf": [{"$ref": REF.format(model=chunk.__name__)}, OPENAI_ERROR]}, True)


# Messages and Responses events name their `type`; errors are events too.
NAMED_STREAM = _sse(_TYPED, False)

# Every JSON request: bad JSON or fields (400), API key (401), body limit (413), loading,
# overloaded or shutting down (503); completions answer 501 in --embedding mode.
POST = (400, 401, 413, 503)
GENERATE = (*POST, 501)
DESCRIPTIONS = {400: "Invalid request", 401: "Missing or invalid API key",
                404: "Not found", 413: "Request body too large",
                501: "Not supported by this server's mode",
                503: "Loading, overloaded or shutting down"}

_HI = [{"role": "user", "content": "Say hello."}]
# Request examples for /docs; fuzzers replay them first, so each body has a request that
# gets through validation to the engine, streamed and not.
EXAMPLES: dict[type[BaseModel], dict[str, dict[str, Any]]] = {
    p.ChatCompletionRequest: {
        "chat": {"messages": _HI, "max_tokens": 8, "temperature": 0},
        "stream": {"messages": _HI, "max_tokens": 8, "stream": True,
                   "stream_options": {"include_usage": True}, "logprobs": True,
                   "top_logprobs": 2},
    },
    p.CompletionRequest: {
        "text": {"prompt": "Once upon a time", "max_tokens": 8, "logprobs": 2},
        "stream": {"prompt": ["Hello", "Bye"], "max_tokens": 8, "stream": True, "echo": True},
    },
    p.EmbeddingRequest: {"texts": {"input": ["Hello world", "Paris"]},
                         "base64": {"input": "Hello", "encoding_format": "base64"}},
    p.TokenizeRequest: {"pieces": {"content": "Hello world", "with_pieces": True}},
    p.DetokenizeRequest: {"ids": {"tokens": [1, 2, 3]}},
    anthropic.MessagesRequest: {
        "message": {"model": "any", "max_tokens": 8, "messages": _HI},
        "stream": {"model": "any", "max_tokens": 8, "messages": _HI, "stream": True,
                   "system": "Be brief.", "stop_sequences": ["\n\n"]},
    },
    anthropic.CountTokensRequest: {"count": {"model": "any", "messages": _HI}},
    responses.ResponsesRequest: {
        "text": {"input": "Say hello.", "max_output_tokens": 8, "store": True},
        "stream": {"input": _HI, "instructions": "Be brief.", "max_output_tokens": 8,
                   "stream": True},
    },
}


@dataclass(frozen=True)
class Op:
    """What one operation takes and answers; `ok` is a model or a JSON schema."""

    body: type[BaseModel] | None = None
    ok: type[BaseModel] | dict[str, Any] | None = None
    stream: dict[str, Any] | None = None  # the text/event-stream answer, if it streams
    events: type[BaseModel] | None = None  # the model of its chunks, for the components
    errors: tuple[int, ...] = (401, 503)
    error_shape: dict[str, Any] | None = None  # OPENAI_ERROR unless given
    ok_media: str = "application/json"


_CHAT = Op(p.ChatCompletionRequest, p.ChatCompletionResponse, errors=GENERATE,
           stream=_openai_stream(p.ChatCompletionChunk), events=p.ChatCompletionChunk)
_COMPLETION = Op(p.CompletionRequest, p.CompletionResponse, errors=GENERATE,
                 stream=_openai_stream(p.CompletionResponse))
_MODELS = Op(ok=p.ModelList)
_MODEL = Op(ok=p.Model, errors=(401, 404, 503))
_HEALTH = Op(ok={"type": "object", "required": ["status"],
                 "properties": {"status": {"const": "ok"}}}, errors=(503,),
             error_shape=LLAMA_ERROR)
_OBJECT = {"type": "object"}

OPERATIONS: dict[tuple[str, str], Op] = {
    ("get", "/health"): _HEALTH,
    ("get", "/v1/health"): _HEALTH,
    ("get", "/models"): _MODELS,
    ("get", "/v1/models"): _MODELS,
    ("get", "/models/{model_id}"): _MODEL,
    ("get", "/v1/models/{model_id}"): _MODEL,
    ("post", "/chat/completions"): _CHAT,
    ("post", "/v1/chat/completions"): _CHAT,
    ("post", "/completions"): _COMPLETION,
    ("post", "/v1/completions"): _COMPLETION,
    ("post", "/v1/embeddings"): Op(p.EmbeddingRequest, p.EmbeddingResponse,
                                   errors=(*POST, 404)),
    ("get", "/slots"): Op(ok={"type": "array", "items": _OBJECT}, errors=(400, 401, 501, 503),
                          error_shape={"anyOf": [OPENAI_ERROR, LLAMA_ERROR]}),
    ("get", "/props"): Op(ok=_OBJECT, errors=(401, 501, 503)),
    ("post", "/tokenize"): Op(p.TokenizeRequest, p.TokenizeResponse, errors=GENERATE),
    ("post", "/detokenize"): Op(p.DetokenizeRequest, p.DetokenizeResponse, errors=GENERATE),
    ("post", "/apply-template"): Op(
        p.ChatCompletionRequest, {"type": "object", "required": ["prompt"],
                                  "properties": {"prompt": {"type": "string"}}},
        errors=GENERATE),
    ("get", "/metrics"): Op(ok={"type": "string"}, errors=(401, 503),
                            ok_media="text/plain"),
    ("post", "/v1/messages"): Op(anthropic.MessagesRequest, anthropic.Message,
                                 stream=NAMED_STREAM, errors=GENERATE,
                                 error_shape=ANTHROPIC_ERROR),
    ("post", "/v1/messages/count_tokens"): Op(anthropic.CountTokensRequest,
                                              anthropic.TokenCount, errors=GENERATE,
                                              error_shape=ANTHROPIC_ERROR),
    ("post", "/v1/responses"): Op(responses.ResponsesRequest, responses.ResponseObject,
                                  stream=NAMED_STREAM, errors=GENERATE),
    ("get", "/v1/responses/{response_id}"): Op(ok=responses.ResponseObject,
                                               errors=(401, 404, 503)),
    ("delete", "/v1/responses/{response_id}"): Op(ok=responses.DeletedResponse,
                                                  errors=(401, 404, 503)),
}


def _schemas() -> tuple[dict[tuple[type[BaseModel], str], Any], dict[str, Any]]:
    """All models' JSON schemas in one pass, so shared and same-named models get one
    component each (pydantic qualifies the names that collide)."""
    models: list[tuple[type[BaseModel], Any]] = [(p.ErrorResponse, "serialization"),
                                                 (anthropic.ErrorBody, "serialization")]
    for op in OPERATIONS.values():
        if op.body is not None:
            models.append((op.body, "validation"))
        if isinstance(op.ok, type):
            models.append((op.ok, "serialization"))
        if op.events is not None:
            models.append((op.events, "serialization"))
    refs, defs = models_json_schema(list(dict.fromkeys(models)), ref_template=REF)
    return refs, defs.get("$defs", {})


def _responses(op: Op, refs: dict[tuple[type[BaseModel], str], Any]) -> dict[str, Any]:
    ok = refs[(op.ok, "serialization")] if isinstance(op.ok, type) else op.ok
    content = {op.ok_media: {"schema": ok}} | (op.stream or {})
    out: dict[str, Any] = {"200": {"description": "Success", "content": content}}
    for status in op.errors:
        out[str(status)] = {"description": DESCRIPTIONS.get(status, "Error"), "content": {
            "application/json": {"schema": op.error_shape or OPENAI_ERROR}}}
    return out


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with the bodies, answers and errors of OPERATIONS filled in."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    refs, defs = _schemas()
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # never sent: 422s become 400s
        components.pop(name, None)
    components.update(defs)
    for path, methods in doc.get("paths", {}).items():
        for method, operation in methods.items():
            op = OPERATIONS.get((method, path))
            if op is None:
                continue
            if op.body is not None:
                media: dict[str, Any] = {"schema": refs[(op.body, "validation")]}
                if op.body in EXAMPLES:
                    media["examples"] = {name: {"value": value}
                                         for name, value in EXAMPLES[op.body].items()}
                operation["requestBody"] = {"required": True, "content": {"application/json": media}}
            operation["responses"] = _responses(op, refs)
    app.openapi_schema = doc
    return doc


def install_openapi(app: FastAPI) -> None:
    def generate() -> dict[str, Any]:
        return build_openapi(app)

    app.openapi = generate  # type: ignore[method-assign]


def undeclared(app: FastAPI) -> Iterable[tuple[str, str]]:
    """The app's operations OPERATIONS does not describe (a test keeps this empty)."""
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    for path, methods in doc.get("paths", {}).items():
        for method in methods:
            if (method, path) not in OPERATIONS:
                yield method, path
