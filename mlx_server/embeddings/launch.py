"""Which model embeds, from the config: `--embedding-model PATH` beside the main model, or
the main model itself in `--embedding` mode (llama-server's), where nothing generates."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..config import AppConfig
from ..engine.types import Health, ModelLoadError
from .engine import EmbeddingEngine
from .model import EmbeddingModel


class Loading(Protocol):
    def health(self) -> Health: ...


def embedding_spec(config: AppConfig) -> str | None:
    """The model that serves /v1/embeddings (None in --embedding mode: the default model;
    otherwise no embedding model is served)."""
    mc = config.model
    if mc.embedding:
        return mc.model
    return mc.embedding_model


def embedding_model_id(config: AppConfig) -> str:
    mc = config.model
    if mc.embedding:
        if mc.alias:
            return mc.alias
        return Path(mc.model.rstrip("/")).name.removesuffix(".gguf") if mc.model else "gemma-3-270m"
    if mc.embedding_alias:
        return mc.embedding_alias
    return Path(str(mc.embedding_model).rstrip("/")).name


def config_problem(config: AppConfig) -> str | None:
    """Why this embedding configuration cannot be served, if it cannot."""
    mc = config.model
    if mc.embedding and mc.embedding_model:
        return "--embedding serves the main model's embeddings; drop --embedding-model"
    if mc.reranking or mc.pooling == "rank":
        return "reranking (--reranking, --pooling rank) is not supported yet"
    if mc.pooling == "none" and (mc.embedding or mc.embedding_model):
        return "--pooling none (per-token embeddings) is not supported on /v1/embeddings"
    return None


def _loader(config: AppConfig, spec: str | None, after: Loading | None
            ) -> Callable[[], EmbeddingModel]:
    main = config.model.embedding

    def load() -> EmbeddingModel:
        # transformers' lazy imports are not thread-safe: two threads importing it at once
        # fail ("cannot import name 'AutoProcessor'"), so load after the chat model has.
        while after is not None and after.health().status == "loading":
            time.sleep(0.1)
        from ..loading.errors import GGUFImportError, ModelNotFoundError
        from ..loading.resolve import resolve_model
        from .model import load_embedding_model

        dtype = config.model.dtype if main else "auto"
        try:
            resolved = resolve_model(spec, dtype=dtype)
        except (GGUFImportError, ModelNotFoundError) as e:
            raise ModelLoadError(str(e)) from e
        return load_embedding_model(resolved.path, pooling=config.model.pooling, dtype=dtype,
                                    max_length=config.engine.ctx_size if main else None)

    return load


def start_embedding_engine(config: AppConfig, after: Loading | None = None
                           ) -> EmbeddingEngine | None:
    """Start loading the embedding model on its own thread, once `after` (the chat engine)
    has loaded; None if no embedding model is configured."""
    spec = embedding_spec(config)
    if spec is None and not config.model.embedding:
        return None
    return EmbeddingEngine(_loader(config, spec, after), embedding_model_id(config)).start()
