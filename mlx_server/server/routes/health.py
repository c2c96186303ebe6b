"""GET /health, with llama-server's bodies so its monitoring scripts keep working."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from mlx_server.engine.types import Health
from mlx_server.server.state import server_state

logger = logging.getLogger(__name__)
router = APIRouter()


def _unavailable(message: str) -> JSONResponse:
    # llama-server's shape (numeric code, no param), not OpenAI's: this is what its users poll.
    body = {"error": {"code": 503, "message": message, "type": "unavailable_error"}}
    return JSONResponse(body, status_code=503)


@router.get("/health")
@router.get("/v1/health")
async def health(request: Request) -> JSONResponse:
    try:
        state = server_state(request).health()
    except Exception:
        logger.exception("the engine's health check failed")
        state = Health(ok=False, status="error", detail="the health check failed")
    if state.status == "loading":
        return _unavailable("Loading model")
    if state.ok:
        return JSONResponse({"status": "ok"})
    return _unavailable(state.detail or f"The engine is {state.status}")
