"""The import cache: hits skip all work, dtypes get their own folders, failures leave nothing."""

from __future__ import annotations

import json
import os
import time

import pytest

from mlx_server.loading import GGUFImportError, gguf_cache, gguf_import, import_gguf


def _no_call(*args, **kwargs):
    raise AssertionError("should not be called on a cache hit")


def test_second_import_is_a_cache_hit(tiny_ggufs, tmp_path, monkeypatch):
    path = tiny_ggufs["qwen3"].path
    first = import_gguf(path, cache_root=tmp_path, progress=False)
    monkeypatch.setattr(gguf_import, "read_gguf", _no_call)
    monkeypatch.setattr(gguf_cache.hashlib, "sha256", _no_call)  # the hash index answers
    started = time.perf_counter()
    second = import_gguf(path, cache_root=tmp_path, progress=False)
    assert second == first
    assert time.perf_counter() - started < 0.5


def test_dtype_gets_its_own_folder(tiny_ggufs, tmp_path):
    path = tiny_ggufs["qwen3"].path
    f32 = import_gguf(path, cache_root=tmp_path, progress=False)
    bf16 = import_gguf(path, dtype="bfloat16", cache_root=tmp_path, progress=False)
    assert f32 != bf16 and f32.is_dir() and bf16.is_dir()
    assert json.loads((bf16 / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_same_content_elsewhere_shares_the_folder(tiny_ggufs, tmp_path):
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_ggufs["llama"].path.read_bytes())
    a = import_gguf(tiny_ggufs["llama"].path, cache_root=tmp_path / "c", progress=False)
    b = import_gguf(copy, cache_root=tmp_path / "c", progress=False)
    assert a == b


def test_changed_file_is_rehashed(tiny_ggufs, tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(tiny_ggufs["llama"].path.read_bytes())
    a = import_gguf(path, cache_root=tmp_path / "c", progress=False)
    path.write_bytes(tiny_ggufs["qwen2"].path.read_bytes())
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    b = import_gguf(path, cache_root=tmp_path / "c", progress=False)
    assert a != b
    assert json.loads((b / "config.json").read_text())["model_type"] == "qwen2"


def test_failed_import_leaves_nothing(tiny_ggufs, tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(gguf_import, "write_weights", explode)
    with pytest.raises(GGUFImportError, match="RuntimeError: disk on fire"):
        import_gguf(tiny_ggufs["llama"].path, cache_root=tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["sha256-index.json"]


def test_interrupted_import_leaves_nothing(tiny_ggufs, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_import, "write_weights", interrupt)
    with pytest.raises(KeyboardInterrupt):
        import_gguf(tiny_ggufs["llama"].path, cache_root=tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["sha256-index.json"]


def test_staging_left_by_a_dead_process_is_removed(tiny_ggufs, tmp_path):
    abandoned = tmp_path / ".tmp-999999999-old-float32-v1-abc"
    abandoned.mkdir(parents=True)
    (abandoned / "model.safetensors").write_bytes(b"half written")
    mine = tmp_path / f".tmp-{os.getpid()}-mine"
    mine.mkdir()
    import_gguf(tiny_ggufs["llama"].path, cache_root=tmp_path, progress=False)
    assert not abandoned.exists()
    assert mine.exists()  # a live process's staging folder is left alone


def test_default_cache_root_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert gguf_cache.default_cache_root() == tmp_path / "mlx-server" / "gguf"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert gguf_cache.default_cache_root() == gguf_cache.Path.home() / ".cache/mlx-server/gguf"
