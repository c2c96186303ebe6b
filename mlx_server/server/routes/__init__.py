"""HTTP routes, one module per endpoint family."""

from mlx_server.server.routes import (
    anthropic,
    chat,
    completions,
    embeddings,
    health,
    llama,
    metrics,
    models,
    responses,
    tokenize,
)

ROUTERS = (health.router, models.router, chat.router, completions.router, embeddings.router,
           llama.router, tokenize.router, metrics.router, anthropic.router, responses.router)

__all__ = ["ROUTERS"]
