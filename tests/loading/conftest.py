from __future__ import annotations

import pytest

from .tiny_gguf import TinyGGUF, write_tiny_gguf

ARCHES = ["llama", "qwen2", "qwen3", "gemma3"]


@pytest.fixture(scope="session")
def tiny_ggufs(tmp_path_factory) -> dict[str, TinyGGUF]:
    out = tmp_path_factory.mktemp("tiny-gguf")
    return {arch: write_tiny_gguf(out, arch) for arch in ARCHES}


@pytest.fixture(scope="session")
def imported(tiny_ggufs, tmp_path_factory):
    """arch -> imported float32 folder, shared by the read-only tests."""
    from mlx_server.loading import import_gguf

    cache = tmp_path_factory.mktemp("gguf-cache")
    return {
        arch: import_gguf(t.path, cache_root=cache, progress=False)
        for arch, t in tiny_ggufs.items()
    }
