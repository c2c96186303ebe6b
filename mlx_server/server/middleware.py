"""Pure-ASGI middlewares: request ids, access log and last-resort errors, API keys, body
size limits.

They are plain ASGI (not `BaseHTTPMiddleware`) so streamed responses pass through
untouched and a client disconnect still reaches the route.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_server.server.errors import APIError, internal_error_response
from mlx_server.server.observed import CURRENT_REQUEST, Observer, RequestRecord

logger = logging.getLogger(__name__)
access_log = logging.getLogger("mlx_server.access")

# Polled by probes and scrapers every few seconds: logged at debug, not info.
QUIET_PATHS = frozenset({"/health", "/v1/health", "/metrics", "/slots", "/props"})
# Still answered while draining for shutdown, so probes see the state.
DRAIN_EXEMPT = frozenset({"/health", "/v1/health", "/metrics", "/slots"})

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# uvicorn's h11 limit (16 KiB) holds only while a head is still arriving; one that lands
# in a single read passes whatever its size. These hold always (nginx allows 4 x 8 KiB).
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADERS = 256


class RequestContextMiddleware:
    """Give every request an id (the client's `X-Request-Id` if it is a safe short token),
    return it as a header, answer unexpected exceptions with a bare 500 logged under it,
    write one access-log line per request, and turn requests away while draining."""

    def __init__(self, app: ASGIApp, observer: Observer | None = None):
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        record = RequestRecord(request_id, scope.get("method", ""), scope["path"])
        token = CURRENT_REQUEST.set(record)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                record.status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if (too_large := _header_problem(scope)) is not None:
                await too_large.response()(scope, receive, send_with_id)
            elif self._draining(scope["path"]):
                await _shutting_down().response()(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error in request %s", request_id)
            if not started:  # mid-stream there is nothing left to do but close
                await internal_error_response()(scope, receive, send_with_id)
        finally:
            CURRENT_REQUEST.reset(token)
            _log_request(record)

    def _draining(self, path: str) -> bool:
        return self.observer is not None and self.observer.draining and path not in DRAIN_EXEMPT


def _header_problem(scope: Scope) -> APIError | None:
    headers = scope.get("headers", [])
    size = sum(len(k) + len(v) + 4 for k, v in headers)
    if len(headers) <= MAX_HEADERS and size <= MAX_HEADER_BYTES:
        return None
    logger.warning("refused a request with %d headers of %d bytes", len(headers), size)
    return APIError(431, f"The request headers are too large: {len(headers)} headers, {size} "
                    f"bytes; the limits are {MAX_HEADERS} and {MAX_HEADER_BYTES} bytes.",
                    code="request_header_fields_too_large", headers={"Connection": "close"})


def _shutting_down() -> APIError:
    return APIError(503, "The server is shutting down.", "unavailable_error",
                    code="shutting_down", headers={"Connection": "close", "Retry-After": "1"})


def _log_request(record: RequestRecord) -> None:
    if not record.status:
        record.status = 499  # the client left before a response began (nginx's convention)
    event = record.event()
    level = logging.DEBUG if record.path in QUIET_PATHS else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    text = f"{record.method} {record.path} {record.status} {event['duration_ms']}ms"
    if record.sequences:
        ttft = "-" if event["ttft_ms"] is None else f"{event['ttft_ms']}ms"
        text += (f" prompt={record.prompt_tokens} cached={record.cached_tokens}"
                 f" completion={record.completion_tokens} ttft={ttft}")
    access_log.log(level, "%s [%s]", text, record.request_id, extra={"event": event})


class APIKeyMiddleware:
    """Require `Authorization: Bearer <key>` (or `X-Api-Key: <key>`) when keys are
    configured, as llama-server's --api-key does, on everything but /health. /metrics is
    public unless metrics keys are set; then it takes one of those or an API key.

    Keys are compared as SHA-256 digests with `hmac.compare_digest`, against every key,
    so neither a key's length nor which key matched shows in the timing."""

    PUBLIC = frozenset({"/health", "/v1/health"})
    METRICS = "/metrics"

    def __init__(self, app: ASGIApp, keys: tuple[str, ...],
                 metrics_keys: tuple[str, ...] = ()):
        self.app = app
        self.keys = tuple(_digest(k) for k in keys)
        extra = tuple(_digest(k) for k in metrics_keys)
        self.metrics_keys = extra + self.keys if extra else ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        allowed = self.metrics_keys if path == self.METRICS else self.keys
        if scope["type"] != "http" or not allowed or path in self.PUBLIC:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get("x-api-key", "")
        given = _digest(token)
        matches = [hmac.compare_digest(given, key) for key in allowed]
        if token and any(matches):
            await self.app(scope, receive, send)
            return
        error = APIError(401, "Invalid API key.", code="invalid_api_key",
                         headers={"WWW-Authenticate": "Bearer"})
        await error.response()(scope, receive, send)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


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
