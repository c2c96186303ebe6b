"""HTTP routes, one module per endpoint family."""

from mlx_server.server.routes import (
    chat,
    completions,
    embeddings,
    health,
    llama,
    metrics,
    models,
    tokenize,
)

ROUTERS = (health.router, models.router, chat.router, completions.router, embeddings.router,
           llama.router, tokenize.router, metrics.router)

__all__ = ["ROUTERS"]
