"""Which model embeds, from the config: `--embedding-model PATH` beside the main model, or
the main model itself in `--embedding` mode (llama-server's), where nothing generates."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ..config import AppConfig
from ..engine.types import ModelLoadError
from .engine import EmbeddingEngine
from .model import EmbeddingModel

log = logging.getLogger("mlx_server.embeddings")


def embedding_spec(config: AppConfig) -> str | None:
    """The model that serves /v1/embeddings, or None when no model does."""
    mc = config.model
    if mc.embedding:
        return mc.model
    return mc.embedding_model


def embedding_model_id(config: AppConfig) -> str:
    mc = config.model
    if mc.embedding:
        if mc.alias:
            return mc.alias
        return Path(mc.model.rstrip("/")).name.removesuffix(".gguf") if mc.model else "default"
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
    if mc.pooling == "none" and embedding_spec(config) is not None:
        return "--pooling none (per-token embeddings) is not supported on /v1/embeddings"
    return None


def _loader(config: AppConfig, spec: str | None) -> Callable[[], EmbeddingModel]:
    main = config.model.embedding

    def load() -> EmbeddingModel:
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


def start_embedding_engine(config: AppConfig) -> EmbeddingEngine | None:
    """Start loading the embedding model on its own thread; None if none is configured."""
    spec = embedding_spec(config)
    if spec is None and not config.model.embedding:
        return None
    return EmbeddingEngine(_loader(config, spec), embedding_model_id(config)).start()
