"""Every broken input ends in a GGUFImportError that names the problem, never a traceback."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter

from mlx_server.loading import GGUFImportError, import_gguf

from .tiny_gguf import write_tiny_gguf


def _import(path, tmp_path):
    return import_gguf(path, cache_root=tmp_path / "cache", progress=False)


def _write(path, arch: str, tensors: dict[str, np.ndarray], **metadata) -> None:
    writer = GGUFWriter(str(path), arch)
    for key, value in metadata.items():
        if isinstance(value, float):
            writer.add_float32(f"{arch}.{key}", value)
        else:
            writer.add_uint32(f"{arch}.{key}", value)
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_missing_file(tmp_path):
    with pytest.raises(GGUFImportError, match="not found"):
        _import(tmp_path / "nope.gguf", tmp_path)


def test_wrong_magic(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip file, not a GGUF")
    with pytest.raises(GGUFImportError, match="not a GGUF file"):
        _import(path, tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(GGUFImportError, match="not a GGUF file"):
        _import(path, tmp_path)


def test_truncated_tensor_data(tiny_ggufs, tmp_path):
    data = tiny_ggufs["llama"].path.read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: len(data) - 5000])
    with pytest.raises(GGUFImportError, match=r"truncated: tensor '.+' needs bytes"):
        _import(path, tmp_path)


@pytest.mark.parametrize("keep", [6, 30, 200, 3000])
def test_truncated_header(tiny_ggufs, tmp_path, keep):
    path = tmp_path / "cut.gguf"
    path.write_bytes(tiny_ggufs["qwen3"].path.read_bytes()[:keep])
    with pytest.raises(GGUFImportError, match="truncated or corrupt"):
        _import(path, tmp_path)


def test_garbage_after_magic(tmp_path):
    path = tmp_path / "garbage.gguf"
    rng = np.random.default_rng(0)
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + rng.integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(GGUFImportError):
        _import(path, tmp_path)


def test_unsupported_version(tmp_path):
    path = tmp_path / "v1.gguf"
    path.write_bytes(b"GGUF\x01\x00\x00\x00" + bytes(64))
    with pytest.raises(GGUFImportError, match="version 1"):
        _import(path, tmp_path)


def test_unsupported_architecture(tmp_path):
    path = tmp_path / "mamba.gguf"
    _write(path, "mamba", {"token_embd.weight": np.zeros((8, 32), np.float32)})
    with pytest.raises(GGUFImportError) as info:
        _import(path, tmp_path)
    message = str(info.value)
    assert "unsupported architecture 'mamba'" in message
    assert "gemma3, llama, qwen2, qwen3" in message


def test_unsupported_tensor_type(tmp_path):
    """F64 is a valid GGUF type that the gguf package cannot dequantize."""
    tiny = write_tiny_gguf(tmp_path, "llama", tensor_types={"output_norm.weight": Q.F64})
    with pytest.raises(GGUFImportError, match=r"'output_norm.weight' uses tensor type F64"):
        _import(tiny.path, tmp_path)


def test_unknown_tensor_type_id(tiny_ggufs, tmp_path):
    """A type id newer than this gguf package: patch the first tensor's type field."""
    from mlx_server.loading.gguf_file import read_gguf

    data = bytearray(tiny_ggufs["qwen2"].path.read_bytes())
    first = next(iter(read_gguf(tiny_ggufs["qwen2"].path).tensors))
    name_at = data.index(first.encode())
    n_dims = int.from_bytes(data[name_at + len(first) : name_at + len(first) + 4], "little")
    type_at = name_at + len(first) + 4 + 8 * n_dims
    data[type_at : type_at + 4] = (250).to_bytes(4, "little")
    path = tmp_path / "newtype.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(GGUFImportError, match=f"tensor '{first}' has unknown tensor type id 250"):
        _import(path, tmp_path)


_QWEN3_META = {
    "embedding_length": 32,
    "block_count": 1,
    "feed_forward_length": 64,
    "attention.head_count": 2,
    "attention.layer_norm_rms_epsilon": 1e-6,
}


def test_unknown_tensor_name(tmp_path):
    path = tmp_path / "extra.gguf"
    tensors = {
        "token_embd.weight": np.zeros((8, 32), np.float32),
        "blk.0.mystery.weight": np.zeros((4,), np.float32),
    }
    _write(path, "qwen3", tensors, **_QWEN3_META)
    with pytest.raises(GGUFImportError, match="'blk.0.mystery.weight' has no place"):
        _import(path, tmp_path)


def test_missing_tensors(tmp_path):
    path = tmp_path / "missing.gguf"
    _write(path, "qwen3", {"token_embd.weight": np.zeros((8, 32), np.float32)}, **_QWEN3_META)
    with pytest.raises(GGUFImportError, match="tensors missing for model.layers.0"):
        _import(path, tmp_path)


def test_shape_mismatch(tmp_path):
    path = tmp_path / "shape.gguf"
    tensors = {
        "token_embd.weight": np.zeros((8, 32), np.float32),
        "output_norm.weight": np.zeros((16,), np.float32),
    }
    _write(path, "qwen3", tensors, **_QWEN3_META)
    with pytest.raises(GGUFImportError, match=r"'output_norm.weight' has shape \(16,\)"):
        _import(path, tmp_path)


def test_unsupported_dtype(tiny_ggufs, tmp_path):
    with pytest.raises(GGUFImportError, match="unsupported dtype 'int8'"):
        import_gguf(tiny_ggufs["llama"].path, dtype="int8", cache_root=tmp_path, progress=False)
