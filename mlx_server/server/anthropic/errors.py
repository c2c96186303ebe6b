"""Errors on `/v1/messages` in Anthropic's shape: `{"type": "error", "error": {"type",
"message"}}`, with Anthropic's error types for each status.

Errors are raised all over (validation, routes, the engine, API keys, body limits, unknown
routes) and rendered in OpenAI's shape; rewriting the finished error response here, for
these paths only, catches them all without a second copy of every handler.
"""

from __future__ import annotations

import json

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_server.server.anthropic.protocol import ErrorBody, ErrorDetail
from mlx_server.server.errors import APIError

PREFIX = "/v1/messages"
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
          503: "overloaded_error", 529: "overloaded_error"}


def error_type(status: int) -> str:
    if status in _TYPES:
        return _TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(error: APIError, request_id: str | None = None) -> ErrorBody:
    return ErrorBody(error=ErrorDetail(type=error_type(error.status),
                                       message=error.detail.message), request_id=request_id)


def _rewrite(body: bytes, status: int, request_id: str | None) -> bytes:
    try:
        detail = json.loads(body)["error"]
        message = detail["message"] if isinstance(detail, dict) else str(detail)
    except (ValueError, KeyError, TypeError):
        return body  # not one of our error bodies: leave it alone
    return ErrorBody(error=ErrorDetail(type=error_type(status), message=str(message)),
                     request_id=request_id).model_dump_json().encode()


class AnthropicErrorMiddleware:
    """Rewrites JSON error responses (status >= 400) under `/v1/messages`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewriting_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = MutableHeaders(raw=list(message.get("headers", [])))
                if message["status"] >= 400 and "json" in headers.get("content-type", ""):
                    start = message
                    return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status = start["status"]
            request_id = scope.get("state", {}).get("request_id")
            body = _rewrite(b"".join(chunks), status, request_id)
            headers = MutableHeaders(raw=list(start.get("headers", [])))
            headers["content-length"] = str(len(body))
            await send({**start, "headers": headers.raw})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewriting_send)
