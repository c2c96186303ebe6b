"""The gemv output projection (engine/cpu_head.py) on tiny models: same logits, same tokens."""

import mlx.core as mx
import pytest
from mlx_lm.utils import load_model

from mlx_server.engine import cpu_head

pytestmark = pytest.mark.skipif(cpu_head._SGEMV is None,
                                reason="no OpenBLAS on this machine")


@pytest.mark.parametrize("arch", ["tiny_llama_dir", "tiny_gemma_dir"])
def test_one_row_logits_match_and_batches_keep_sgemm(arch, request):
    path = request.getfixturevalue(arch)
    model, _ = load_model(path)
    model.set_dtype(mx.float32)
    tokens = mx.array([[3, 17, 42, 9, 5]])
    before_one = model(tokens[:, -1:])
    before_many = model(tokens)
    assert cpu_head.install(model)
    calls = []
    real = cpu_head._gemv
    cpu_head._gemv = lambda w, x: calls.append(x.shape) or real(w, x)
    try:
        after_one = model(tokens[:, -1:])
        after_many = model(tokens)
    finally:
        cpu_head._gemv = real
    assert calls == [(1, 1, 64)]  # only the one-row call took gemv
    assert mx.allclose(after_one, before_one, atol=1e-4).item()
    assert mx.array_equal(after_many, before_many).item()
    assert mx.argmax(after_one, -1).tolist() == mx.argmax(before_one, -1).tolist()


def test_not_installed_off_float32(tiny_llama_dir):
    model, _ = load_model(tiny_llama_dir)
    model.set_dtype(mx.bfloat16)
    assert not cpu_head.install(model)
