"""What routes need from the app: the config and the engine, once it has loaded."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from fastapi import Request

from mlx_server import __version__
from mlx_server.config import AppConfig
from mlx_server.engine.types import EmbeddingClient, EngineClient, Health, ModelInfo
from mlx_server.server.errors import APIError, loading_error, unavailable_error

# The engine itself, or a provider that returns None until the model has loaded.
EngineSource = EngineClient | Callable[[], EngineClient | None]


LOADING = Health(ok=False, status="loading", detail="Loading model")


@dataclass(frozen=True)
class ServerState:
    config: AppConfig
    provider: Callable[[], EngineClient | None]
    # Reports on the engine even before `provider` returns it (e.g. a load that failed).
    health_source: Callable[[], Health] | None = None
    # The embedding model, when one is served (`--embedding-model` or `--embedding`).
    embeddings: Callable[[], EmbeddingClient | None] | None = None
    # False in `--embedding` mode: the main model only embeds, as in llama-server.
    generation: bool = True

    def health(self) -> Health:
        if self.health_source is not None:
            return self.health_source()
        engine = self.provider()
        return LOADING if engine is None else engine.health()


def as_provider(source: EngineSource) -> Callable[[], EngineClient | None]:
    # An engine has `generate`; anything else callable is a provider.
    if hasattr(source, "generate"):
        engine = cast(EngineClient, source)
        return lambda: engine
    return source


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


def ready_engine(request: Request) -> EngineClient:
    """The engine, or a 503: "Loading model" (as llama-server answers) until it is ready,
    or the reason it never will be."""
    state = server_state(request)
    if not state.generation:
        raise APIError(501, "This server does not support completions. Start it without "
                       "--embedding.", "not_supported_error", code="not_supported")
    engine = state.provider()
    if engine is not None and engine.health().status != "loading":
        return engine
    health = state.health() if state.health_source is not None else LOADING
    if health.status in ("error", "wedged"):
        raise unavailable_error(health.detail or f"The engine is in state '{health.status}'.")
    raise loading_error()


def ready_embeddings(request: Request) -> EmbeddingClient:
    """The embedding model, a 503 while it loads (or if it failed), or a 404 if none is served."""
    source = server_state(request).embeddings
    client = source() if source is not None else None
    if source is None:
        raise APIError(404, "This server serves no embedding model; start it with "
                       "--embedding-model PATH, or --embedding to embed with the main model.",
                       "not_found_error", param="model", code="model_not_found")
    if client is None:
        raise loading_error()
    health = client.health()
    if health.status == "loading":
        raise loading_error()
    if not health.ok:
        raise unavailable_error(health.detail or "The embedding model is unavailable.")
    return client


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def system_fingerprint(info: ModelInfo) -> str:
    """Changes when the server version or the served weights change, as OpenAI's does."""
    key = f"{__version__}|{info.id}|{info.path}|{info.dtype}|{info.device}"
    return "fp_" + hashlib.sha256(key.encode()).hexdigest()[:10]
