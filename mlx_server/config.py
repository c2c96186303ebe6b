"""Frozen configuration objects. `cli.py` builds them from flags; nothing below it sees argparse."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class ModelConfig:
    """Which model to serve and how to load it."""

    # A folder, a Hugging Face id (resolved from the local cache only), a .gguf file,
    # or None for the embedded default model.
    model: str | None = None
    alias: str | None = None
    chat_template_file: str | None = None
    # "auto": float32 for GGUF imports on CPU, the checkpoint's own dtype elsewhere.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


@dataclass(frozen=True)
class EngineConfig:
    """How the engine schedules and caches."""

    max_slots: int = 4
    ctx_size: int | None = None  # None: the model's own context length
    prefill_step_size: int = 512
    max_queue: int = 64
    request_timeout_s: float | None = 600.0
    # KV-cache budget in bytes for the prefix cache; None derives it from memory.
    cache_bytes: int | None = None
    enable_prefix_cache: bool = True
    # /health turns non-200 when the loop has work but no step finished for this long.
    wedge_timeout_s: float = 60.0


@dataclass(frozen=True)
class ServerConfig:
    """HTTP-side settings."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8 * 1024 * 1024
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogConfig:
    format: Literal["text", "json"] = "text"
    level: str = "info"


@dataclass(frozen=True)
class AppConfig:
    """Everything the process needs, in one frozen object."""

    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    # Flags accepted for llama-server compatibility that mean nothing on MLX.
    ignored_flags: tuple[str, ...] = ()
