"""Fixtures for the reliability tests: the app around the real engine on the tiny
random-weight model (and the real embedding engine on a tiny embedder), so fuzzing
reaches the engine's own validation instead of a fake's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tiny_embedder import running_embedder

from mlx_server.config import EngineConfig
from mlx_server.engine.types import EmbeddingClient, EngineClient

# Small enough that "past the context" is cheap to reach and no request decodes long.
TINY_CTX = 256


@pytest.fixture(scope="module")
def tiny_engine(tiny_llama_dir) -> Iterator[EngineClient]:
    from mlx_server.engine.async_engine import AsyncEngine
    from mlx_server.engine.loader import load_model

    config = EngineConfig(max_slots=4, ctx_size=TINY_CTX, max_queue=64)
    engine = AsyncEngine(lambda: load_model(tiny_llama_dir, ctx_size=TINY_CTX), config,
                         "tiny").start()
    assert engine.wait_ready(60), engine.health()
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory) -> Iterator[EmbeddingClient]:
    yield from running_embedder(tmp_path_factory.mktemp("emb"))

