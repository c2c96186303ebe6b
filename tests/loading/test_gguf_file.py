"""The fast header reader agrees with gguf-py's own GGUFReader on every field and tensor."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType

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
