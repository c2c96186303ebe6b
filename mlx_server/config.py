"""Frozen configuration objects. `cli.py` builds them from flags; nothing below it sees argparse."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class ModelConfig:
    """Which model to serve and how to load it."""

    # A folder, a Hugging Face id (resolved from the local cache only), a .gguf file,
    # or None for the embedded default model.
    model: str | None = None
    alias: str | None = None
    chat_template_file: str | None = None
    # Inline Jinja text (`--chat-template` with a template or a built-in name); wins over
    # the file when both are given, as the later flag does in llama-server.
    chat_template: str | None = None
    # "auto": float32 for GGUF imports on CPU, the checkpoint's own dtype elsewhere.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Embedding / rerank mode (`--embedding`, `--reranking`, `--pooling`).
    embedding: bool = False
    reranking: bool = False
    pooling: Literal["none", "mean", "cls", "last", "rank"] | None = None
    mmproj: str | None = None  # a multimodal projector (`--mmproj`), for vision models
    embedding_model: str | None = None  # a second model served by /v1/embeddings
    embedding_alias: str | None = None  # its id in responses (default: the folder's name)


@dataclass(frozen=True)
class SpecConfig:
    """Speculative decoding (`--spec-type`, `-md`): drafts verified in one batched forward."""

    # "none", "ngram" (prompt lookup; llama-server's ngram-* names map here) or "draft".
    type: Literal["none", "ngram", "draft"] = "none"
    draft_model: str | None = None  # `-md`: a model sharing the target's vocabulary
    draft_max: int = 16  # drafts per sequence per step
    draft_min: int = 0  # fewer drafts than this: decode normally this step
    p_min: float = 0.8  # a greedy draft model stops drafting below this confidence
    ngram_n: int = 3  # the longest suffix n-gram looked up in the sequence's history
    ngram_min: int = 1  # the shortest one


@dataclass(frozen=True)
class EngineConfig:
    """How the engine schedules and caches."""

    max_slots: int = 4
    ctx_size: int | None = None  # None: the model's own context length
    prefill_step_size: int = 2048
    max_queue: int = 64
    request_timeout_s: float | None = 600.0
    # KV-cache budget in bytes for the prefix cache; None derives it from memory.
    cache_bytes: int | None = None
    enable_prefix_cache: bool = True
    # /health turns non-200 when the loop has work but no step finished for this long.
    wedge_timeout_s: float = 60.0
    # llama.cpp cache type names (`-ctk q8_0`); None keeps the model's dtype.
    kv_cache_type_k: str | None = None
    kv_cache_type_v: str | None = None
    spec: SpecConfig = SpecConfig()
    # Decode steps as one compiled graph over fixed-shape caches (engine/compiled_decode.py):
    # "auto" on a GPU, "on" wherever the forward has no host sync, "off" never.
    compile_decode: Literal["auto", "on", "off"] = "auto"


@dataclass(frozen=True)
class ToolConfig:
    """Tool calling and reasoning: how model output is parsed into calls and thoughts."""

    tool_call_format: str | None = None  # a tool parser name; None infers it from the template
    # "on", "off", "auto" (llama-server's `--reasoning`) or a reasoning parser name.
    reasoning: str = "auto"
    reasoning_format: str | None = None  # llama-server's `--reasoning-format` (none, deepseek, ...)
    reasoning_budget: int = -1  # thinking tokens allowed; -1 unlimited, 0 disables thinking
    reasoning_budget_message: str | None = None
    # Also send the thought as `reasoning` (beside `reasoning_content`), for clients that read it.
    mirror_reasoning: bool = False
    # Defaults for every request's template kwargs (`--chat-template-kwargs '{...}'`).
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True)
class ServerConfig:
    """HTTP-side settings."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8 * 1024 * 1024
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    # /metrics is public unless these keys are set; then it needs one of them or an API key.
    metrics_api_keys: tuple[str, ...] = ()
    slots_endpoint: bool = True
    # After SIGTERM: how long in-flight requests may run before they are ended.
    drain_timeout_s: float = 5.0
    # Chat images given as http(s) URLs are fetched only when allowed (`--allow-image-urls`),
    # within these limits, and never from private or loopback addresses.
    allow_image_urls: bool = False
    max_image_bytes: int = 20 * 1024 * 1024
    image_fetch_timeout_s: float = 10.0
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None


@dataclass(frozen=True)
class LogConfig:
    format: Literal["text", "json"] = "text"
    level: str = "info"
    file: str | None = None  # also write the log here (`--log-file`)


@dataclass(frozen=True)
class DistributedConfig:
    """One model sharded across the ranks of an `mlx.launch` job (`--distributed`)."""

    # "off"; "auto": tensor parallel where mlx-lm supports it, else pipeline; or either one.
    mode: Literal["off", "auto", "tensor", "pipeline"] = "off"
    backend: str = "any"  # mx.distributed.init's: any, ring, jaccl, mpi, nccl


@dataclass(frozen=True)
class AppConfig:
    """Everything the process needs, in one frozen object."""

    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    tools: ToolConfig = field(default_factory=ToolConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    # Flags accepted for llama-server compatibility that mean nothing on MLX (or are not
    # implemented yet), as given: ("--n-gpu-layers 99", "--mlock"). Logged once at start.
    ignored_flags: tuple[str, ...] = ()
    # Flags with an MLX meaning that are accepted but not applied yet, with the reason.
    pending_flags: tuple[str, ...] = ()
