"""What routes need from the app: the config and the engine, once it has loaded."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Union

from fastapi import Request

from mlx_server import __version__
from mlx_server.config import AppConfig
from mlx_server.engine.types import EngineClient, ModelInfo
from mlx_server.server.errors import loading_error

# The engine itself, or a provider that returns None until the model has loaded.
EngineSource = Union[EngineClient, Callable[[], Union[EngineClient, None]]]


@dataclass(frozen=True)
class ServerState:
    config: AppConfig
    provider: Callable[[], EngineClient | None]


def as_provider(source: EngineSource) -> Callable[[], EngineClient | None]:
    # An engine has `generate`; anything else callable is a provider.
    if hasattr(source, "generate"):
        engine = source
        return lambda: engine  # type: ignore[return-value]
    return source  # type: ignore[return-value]


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


def ready_engine(request: Request) -> EngineClient:
    """The engine, or a 503 "Loading model" (as llama-server answers) until it is ready."""
    engine = server_state(request).provider()
    if engine is None or engine.health().status == "loading":
        raise loading_error()
    return engine


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def system_fingerprint(info: ModelInfo) -> str:
    """Changes when the server version or the served weights change, as OpenAI's does."""
    key = f"{__version__}|{info.id}|{info.path}|{info.dtype}|{info.device}"
    return "fp_" + hashlib.sha256(key.encode()).hexdigest()[:10]
