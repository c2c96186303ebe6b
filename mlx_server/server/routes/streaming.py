"""Errors after a stream has begun: the status is already 200, so they travel as an SSE
event (`data: {"error": {...}}`, which the OpenAI SDKs raise as an APIError)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mlx_server.engine.types import EngineError
from mlx_server.server import sse
from mlx_server.server.errors import APIError, from_engine_error
from mlx_server.server.generation import EngineStream, close_all
from mlx_server.server.protocol import ErrorResponse

logger = logging.getLogger(__name__)


@dataclass
class StreamErrors:
    event: bytes | None = None  # the error event to send, if the stream failed
    error: APIError | None = None  # the same error, for formats with their own event shape


@asynccontextmanager
async def stream_error_events(
    streams: Sequence[EngineStream], prompt_param: str
) -> AsyncIterator[StreamErrors]:
    """Turn an exception in the body into `errors.event`, and abort unfinished sequences
    however the body ends (cancellation included)."""
    errors = StreamErrors()
    try:
        yield errors
    except Exception as exc:
        errors.error = _as_api_error(exc, prompt_param)
        errors.event = sse.event(ErrorResponse(error=errors.error.detail))
    finally:
        await close_all(streams)


def _as_api_error(exc: Exception, prompt_param: str) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, EngineError):
        error = from_engine_error(exc, prompt_param)
        if error.status >= 500:
            logger.error("engine error mid-stream", exc_info=exc)
        return error
    logger.exception("unexpected error mid-stream")
    return APIError(500, "The server had an error while processing your request.",
                    "server_error")
