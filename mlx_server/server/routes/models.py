"""GET /v1/models and /v1/models/{id}: the generation model and the embedding model served."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlx_server.engine.types import ModelInfo
from mlx_server.server.errors import APIError
from mlx_server.server.protocol import Model, ModelList
from mlx_server.server.routes.common import json_response
from mlx_server.server.state import ready_embeddings, ready_engine, server_state

router = APIRouter()


def _model(info: ModelInfo) -> Model:
    return Model(id=info.id, created=info.created)


@router.get("/v1/models")
@router.get("/models")
async def list_models(request: Request) -> Response:
    return json_response(ModelList(data=_served(request)))


# `:path` because model ids are often "org/name".
@router.get("/v1/models/{model_id:path}")
@router.get("/models/{model_id:path}")
async def retrieve_model(request: Request, model_id: str) -> Response:
    for model in _served(request):
        if model.id == model_id:
            return json_response(model)
    raise APIError(404, f"The model '{model_id}' does not exist.", "not_found_error",
                   param="model", code="model_not_found")


def _served(request: Request) -> list[Model]:
    """The generation model (unless in --embedding mode), then the embedding model if any."""
    state = server_state(request)
    models = [_model(ready_engine(request).model_info)] if state.generation else []
    if state.embeddings is not None:
        info = ready_embeddings(request).embedding_info
        models.append(Model(id=info.id, created=info.created))
    return models
