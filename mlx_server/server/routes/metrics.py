"""GET /metrics: Prometheus text (llama-server's `llamacpp:` series and vLLM-style ones).

Always served (llama-server needs `--metrics`, which is accepted); public unless
`--metrics-api-key` is set, which the API-key middleware enforces."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlx_server.server.metrics import CONTENT_TYPE
from mlx_server.server.observed import Observer

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    observer: Observer = request.app.state.observer
    return Response(observer.metrics.render(), media_type=CONTENT_TYPE)
