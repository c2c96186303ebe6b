"""The fast reader and dequantizer agree with gguf-py's own GGUFReader and dequantize."""

from __future__ import annotations

import gguf.quants
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType

from mlx_server.loading import gguf_tensors
from mlx_server.loading.gguf_file import read_gguf

from .conftest import ARCHES


@pytest.mark.parametrize("arch", ARCHES)
def test_matches_gguf_reader(arch, tiny_ggufs):
    path = tiny_ggufs[arch].path
    ours, reference = read_gguf(path), GGUFReader(path)
    expected_keys = [k for k in reference.fields if not k.startswith("GGUF.")]
    assert list(ours.metadata) == expected_keys
    for key in expected_keys:
        field = reference.fields[key]
        want, got = field.contents(), ours.metadata[key]
        if field.types[0] == GGUFValueType.ARRAY:
            assert list(np.asarray(got).tolist()) == list(want), key
        else:
            assert got == want, key
    assert list(ours.tensors) == [t.name for t in reference.tensors]
    for tensor in reference.tensors:
        info = ours.tensors[tensor.name]
        assert info.qtype == tensor.tensor_type
        assert info.offset == tensor.data_offset
        assert ours.tensor_bytes(info).tobytes() == tensor.data.tobytes()
    ours.close()


def _dequantizable_types() -> list[GGMLQuantizationType]:
    found = []
    for qtype, (_, size) in GGML_QUANT_SIZES.items():
        try:
            gguf.quants.dequantize(np.zeros((1, size), np.uint8), qtype)
        except NotImplementedError:
            continue
        found.append(qtype)
    return found


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # random bytes make inf/nan scales
@pytest.mark.parametrize("qtype", _dequantizable_types(), ids=lambda q: q.name)
def test_fast_dequantize_equals_gguf(qtype, monkeypatch):
    """Chunked, threaded dequantization gives gguf-py's exact values for every type."""
    block, size = GGML_QUANT_SIZES[qtype]
    monkeypatch.setattr(gguf_tensors, "_CHUNK_VALUES", 7 * 3 * block)  # 7 rows a chunk
    raw = np.random.default_rng(int(qtype)).integers(0, 256, (300, 3 * size), dtype=np.uint8)
    want = gguf.quants.dequantize(raw, qtype)
    got = gguf_tensors.dequantize(raw, qtype)
    assert got.shape == want.shape == (300, 3 * block)
    np.testing.assert_array_equal(got, want)
