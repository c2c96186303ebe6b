"""The HTTP layer: an OpenAI-compatible FastAPI app that reaches the engine only through
`mlx_server.engine.types.EngineClient`. Nothing here imports mlx."""

from mlx_server.server.app import create_app

__all__ = ["create_app"]
