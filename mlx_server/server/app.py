"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from mlx_server import __version__
from mlx_server.config import AppConfig
from mlx_server.engine.types import EmbeddingClient, Health
from mlx_server.server.anthropic.errors import AnthropicErrorMiddleware
from mlx_server.server.errors import install_error_handlers
from mlx_server.server.middleware import (
    APIKeyMiddleware,
    BodyLimitMiddleware,
    RequestContextMiddleware,
)
from mlx_server.server.observed import observer_for
from mlx_server.server.openapi import install_openapi
from mlx_server.server.routes import ROUTERS
from mlx_server.server.state import EngineSource, ServerState, as_provider


def create_app(
    engine: EngineSource, config: AppConfig, health: Callable[[], Health] | None = None,
    *, embeddings: Callable[[], EmbeddingClient | None] | None = None, generation: bool = True,
) -> FastAPI:
    """Build the HTTP app around an engine, or around a provider that returns None until the
    model has loaded (health says "loading" and other endpoints answer 503 until then).

    `health`, when given, is what /health reports (and why endpoints are unavailable) even
    while the provider has no engine to hand out, e.g. after a failed load.

    `embeddings` provides the embedding model behind /v1/embeddings, if any; `generation`
    False (llama-server's `--embedding`) answers completions with 501."""
    provider = as_provider(engine)
    observer = observer_for(provider)  # metrics, access log, shutdown drain
    # Outermost first: CORS headers even on errors; Anthropic's error shape on its routes,
    # whoever answered; the request id on every response; keys checked before a large
    # body is buffered.
    middleware = [
        Middleware(AnthropicErrorMiddleware),
        Middleware(RequestContextMiddleware, observer=observer),
        Middleware(APIKeyMiddleware, keys=config.server.api_keys,
                   metrics_keys=config.server.metrics_api_keys),
        Middleware(BodyLimitMiddleware, max_bytes=config.server.max_body_bytes),
    ]
    if config.server.cors_origins:
        middleware.insert(0, Middleware(
            CORSMiddleware, allow_origins=list(config.server.cors_origins),
            allow_methods=["*"], allow_headers=["*"], expose_headers=["X-Request-Id"]))
    app = FastAPI(title="mlx-server", version=__version__, middleware=middleware)
    app.state.observer = observer
    app.state.server = ServerState(config, observer.observe(provider), health,
                                   embeddings=embeddings, generation=generation)
    install_error_handlers(app)
    install_openapi(app)  # the bodies and errors the routes parse and raise themselves
    for router in ROUTERS:
        app.include_router(router)
    return app
