"""Pure-ASGI middlewares: request ids and last-resort errors, API keys, body size limits.

They are plain ASGI (not `BaseHTTPMiddleware`) so streamed responses pass through
untouched and a client disconnect still reaches the route.
"""

from __future__ import annotations

import hmac
import logging
import re
import uuid

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_server.server.errors import APIError, internal_error_response

logger = logging.getLogger(__name__)

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestContextMiddleware:
    """Give every request an id (the client's `X-Request-Id` if it is a safe short token),
    return it as a header, and answer unexpected exceptions with a bare 500 logged under it."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error in request %s", request_id)
            if not started:  # mid-stream there is nothing left to do but close
                await internal_error_response()(scope, receive, send_with_id)


class APIKeyMiddleware:
    """Require `Authorization: Bearer <key>` when keys are configured (as llama-server's
    --api-key does), except on the endpoints llama-server leaves public."""

    PUBLIC = frozenset({"/health", "/v1/health", "/models", "/v1/models"})

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]):
        self.app = app
        self.keys = tuple(k.encode() for k in keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in self.PUBLIC:
            await self.app(scope, receive, send)
            return
        auth = Headers(scope=scope).get("authorization", "")
        token = auth[7:].strip().encode() if auth[:7].lower() == "bearer " else b""
        if any(hmac.compare_digest(token, key) for key in self.keys):
            await self.app(scope, receive, send)
            return
        error = APIError(401, "Invalid API key.", code="invalid_api_key",
                         headers={"WWW-Authenticate": "Bearer"})
        await error.response()(scope, receive, send)


class BodyLimitMiddleware:
    """Answer 413 for bodies over `max_bytes`, by Content-Length and by counting what
    arrives (chunked uploads declare no length). The body is buffered, which the JSON
    routes do anyway, and replayed to the app."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and not declared.isdigit():
            await APIError(400, "Invalid Content-Length header.").response()(scope, receive, send)
            return
        if declared is not None and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        body = await self._read(receive)
        if body is None:
            await self._too_large(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break  # the route will see the disconnect when it listens for one
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"The request body is larger than the limit of {self.max_bytes} bytes."
        error = APIError(413, message, code="request_too_large", headers={"Connection": "close"})
        await error.response()(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands out the buffered body once, then the server's own messages."""
    pending: Message | None = {"type": "http.request", "body": body, "more_body": False}

    async def replay() -> Message:
        nonlocal pending
        if pending is not None:
            message, pending = pending, None
            return message
        return await receive()

    return replay
