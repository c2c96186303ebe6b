"""Which model embeds, as the flags say, and the combinations refused at start."""

from __future__ import annotations

import pytest

from mlx_server.cli import parse_args
from mlx_server.embeddings.launch import config_problem, embedding_model_id, embedding_spec


def test_embedding_model_beside_the_chat_model():
    cfg = parse_args(["--embedding-model", "/models/bge-small/"])
    assert embedding_spec(cfg) == "/models/bge-small/" and not cfg.model.embedding
    assert embedding_model_id(cfg) == "bge-small"
    cfg = parse_args(["--embedding-model", "/x/model", "--embedding-alias", "minilm"])
    assert embedding_model_id(cfg) == "minilm"
    assert config_problem(cfg) is None


def test_embedding_mode_embeds_with_the_main_model():
    cfg = parse_args(["-m", "/models/Qwen3-Embedding-0.6B", "--embedding", "--pooling", "last"])
    assert embedding_spec(cfg) == "/models/Qwen3-Embedding-0.6B"
    assert embedding_model_id(cfg) == "Qwen3-Embedding-0.6B"
    assert config_problem(cfg) is None


def test_no_embedding_model():
    cfg = parse_args([])
    assert embedding_spec(cfg) is None and config_problem(cfg) is None


@pytest.mark.parametrize("argv, message", [
    (["--embedding", "--embedding-model", "/e"], "drop --embedding-model"),
    (["--reranking"], "reranking"),
    (["--embedding", "--pooling", "none"], "--pooling none"),
])
def test_refused_combinations(argv, message):
    assert message in config_problem(parse_args(argv))
