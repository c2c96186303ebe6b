"""HTTP routes, one module per endpoint family."""

from mlx_server.server.routes import chat, completions, health, models

ROUTERS = (health.router, models.router, chat.router, completions.router)

__all__ = ["ROUTERS"]
