"""The BLAS output projection (engine/cpu_head.py) on tiny models: same logits, same tokens."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.utils import load_model

from mlx_server.engine import cpu_head

pytestmark = pytest.mark.skipif(cpu_head._SGEMV is None or cpu_head._SGEMM is None,
                                reason="no OpenBLAS on this machine")


@pytest.mark.parametrize("arch", ["tiny_llama_dir", "tiny_gemma_dir"])
def test_decode_step_logits_match_and_prefill_keeps_mlx(arch, request, monkeypatch):
    path = request.getfixturevalue(arch)
    model, _ = load_model(path)
    model.set_dtype(mx.float32)
    one = mx.array([[3]])
    few = mx.array([[3], [17], [42], [9], [5]])  # a decode step of five rows
    prompt = mx.array([list(range(3, 3 + cpu_head.MAX_ROWS + 1))])  # more rows: MLX's matmul
    before = [model(t) for t in (one, few, prompt)]
    mx.eval(before)
    assert cpu_head.install(model)
    # 32-row blocks: both threads' halves span several blocks, the helper's ends ragged
    monkeypatch.setattr(cpu_head, "BLOCK_WORK", 5 * 64 * 32)
    calls = []
    real = cpu_head._project
    monkeypatch.setattr(cpu_head, "_project", lambda w, x: calls.append(x.shape) or real(w, x))
    after = [model(t) for t in (one, few, prompt)]
    assert calls == [(1, 1, 64), (5, 1, 64)]
    for a, b in zip(after, before):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-4)
        assert mx.argmax(a, -1).tolist() == mx.argmax(b, -1).tolist()
    assert mx.array_equal(after[2], before[2]).item()


def test_not_installed_off_float32(tiny_llama_dir):
    model, _ = load_model(tiny_llama_dir)
    model.set_dtype(mx.bfloat16)
    assert not cpu_head.install(model)


@pytest.mark.parametrize("n,cols,rows", [(8, 640, 128), (4, 640, 256), (16, 640, 64),
                                         (2, 640, 512), (3, 640, 256), (8, 64, 1024)])
def test_block_rows_keep_blocks_near_the_direct_kernel_size(n, cols, rows):
    assert cpu_head.block_rows(n, cols) == rows
    assert n * rows * cols <= cpu_head.BLOCK_WORK


def test_block_rows_floor():
    assert cpu_head.block_rows(16, 100_000) == 32


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("vocab", [1, 31, 32, 33, 100, 4096 + 7])
@pytest.mark.parametrize("n", [2, 5, 16])
def test_project_any_vocab_against_numpy(vocab, n, split, monkeypatch):
    """Blocks larger than the whole weight, one ragged block, many: never past the ends."""
    monkeypatch.setattr(cpu_head, "SPLIT", split)
    rng = np.random.default_rng(vocab * n)
    weight = rng.standard_normal((vocab, 48), dtype=np.float32)
    x = mx.array(rng.standard_normal((n, 1, 48), dtype=np.float32))
    got = np.array(cpu_head._project(weight, x))
    assert got.shape == (n, 1, vocab)
    np.testing.assert_allclose(got[:, 0], np.array(x)[:, 0] @ weight.T, rtol=1e-4, atol=1e-4)
