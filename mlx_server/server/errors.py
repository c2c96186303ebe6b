"""OpenAI-format errors: `{"error": {"message", "type", "param", "code"}}` with the right status.

Routes raise `APIError` (or let an `EngineError` escape); the handlers installed by
`install_error_handlers` turn those, validation failures and Starlette's 404/405 into
bodies that OpenAI clients understand. Unexpected exceptions are answered in
`middleware.RequestContextMiddleware`, which knows the request id to log them with.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from mlx_server.engine.types import (
    CapacityError,
    EngineError,
    InvalidRequestError,
    PromptTooLongError,
    QueueFullError,
    TemplateError,
)
from mlx_server.server.protocol import ErrorDetail, ErrorResponse

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error to answer with a given status and OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(message=message, type=type, param=param, code=code)
        self.headers = headers

    def response(self) -> JSONResponse:
        body = ErrorResponse(error=self.detail).model_dump()
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class ClientDisconnected(Exception):
    """The client went away before we answered; nobody will read the response."""


def invalid(message: str, param: str | None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def not_supported(param: str, what: str) -> APIError:
    return APIError(400, f"{what} is not supported yet.", param=param, code="unsupported_value")


def loading_error() -> APIError:
    return APIError(503, "Loading model", "unavailable_error", code="model_loading",
                    headers={"Retry-After": "5"})


def unavailable_error(detail: str) -> APIError:
    return APIError(503, detail, "unavailable_error", code="engine_unavailable")


def internal_error_response() -> JSONResponse:
    # Deliberately generic: details (and tracebacks) go to the log, never to the client.
    return APIError(500, "The server had an error while processing your request.",
                    "server_error").response()


def from_engine_error(exc: EngineError, prompt_param: str = "messages") -> APIError:
    """Map the engine's typed errors to statuses; anything else is a 500."""
    if isinstance(exc, PromptTooLongError):
        return APIError(400, str(exc), param=prompt_param, code="context_length_exceeded")
    if isinstance(exc, QueueFullError):
        return APIError(503, str(exc), "server_overloaded_error", code="queue_full",
                        headers={"Retry-After": str(max(1, exc.retry_after_s))})
    if isinstance(exc, CapacityError):
        return APIError(400, str(exc) or "The request can never fit the KV cache.",
                        code="capacity_exceeded")
    if isinstance(exc, InvalidRequestError):
        return APIError(400, str(exc), param=exc.param)
    if isinstance(exc, TemplateError):
        return APIError(400, str(exc), param=prompt_param,
                        code="template_error")
    return APIError(500, "The engine failed while processing your request.", "server_error")


# ---------------------------------------------------------------- validation errors

# Labels pydantic puts in error locations for union members ("str", "list[ContentPart]",
# "function-after[...]"); they are not field names, so they do not belong in `param`.
_FIELD = re.compile(r"[a-z_][a-z0-9_]*")
_NOT_FIELDS = {"str", "int", "float", "bool", "none", "list", "dict", "body"}


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if isinstance(p, int) or
             (_FIELD.fullmatch(str(p)) and p not in _NOT_FIELDS)]
    return ".".join(parts) or None


def from_validation_errors(errors: list[Any]) -> APIError:
    """One 400 naming the most specific failing field (deepest location wins)."""
    err = max(errors, key=lambda e: len(e["loc"]))
    kind, param = err["type"], _param(tuple(err["loc"]))
    if kind == "json_invalid":
        return invalid("We could not parse the JSON body of your request: " + err["msg"],
                       None, "invalid_json")
    if kind == "extra_forbidden":
        return invalid(f"Unknown parameter: '{param}'.", param, "unknown_parameter")
    if kind == "missing":
        return invalid(f"Missing required parameter: '{param}'.", param,
                       "missing_required_parameter")
    if param is None:
        return invalid(f"The request body is invalid: {err['msg']}.", None)
    code = "invalid_type" if kind.endswith("_type") else "invalid_value"
    return invalid(f"Invalid value for '{param}': {err['msg']}.", param, code)


# ---------------------------------------------------------------- handlers


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    if exc.status >= 500 and exc.__cause__ is not None:
        # The client gets a generic message; the log gets what actually happened.
        rid = getattr(request.state, "request_id", "-")
        logger.error("request %s failed: %s", rid, exc.detail.message, exc_info=exc.__cause__)
    return exc.response()


async def _engine_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EngineError)
    api_error = from_engine_error(exc)
    if api_error.status >= 500:
        rid = getattr(request.state, "request_id", "-")
        logger.error("engine error in request %s", rid, exc_info=exc)
    return api_error.response()


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, (RequestValidationError, ValidationError))
    return from_validation_errors(list(exc.errors())).response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    route = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        error = APIError(404, f"Invalid URL ({route}).", "not_found_error", code="not_found")
    elif exc.status_code == 405:
        error = APIError(405, f"Method not allowed ({route}).", code="method_not_allowed",
                         headers=dict(exc.headers or {}))
    else:
        error = APIError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    return error.response()


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    # 499 is nginx's "client closed request"; it only shows up in access logs.
    return Response(status_code=499)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnected, _client_disconnected)
