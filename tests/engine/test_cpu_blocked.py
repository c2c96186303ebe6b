"""Few-row linears as blocked sgemms on two streams (engine/cpu_blocked.py)."""

import threading

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.utils import load_model

from mlx_server.engine import cpu_blocked


@pytest.mark.parametrize("rows,out,width,block", [
    (8, 1024, 640, 128),    # Gemma 3's q_proj in a batch-8 step
    (8, 640, 1024, 64),     # o_proj: the work bound picks 64
    (1, 640, 640, 128),     # one row: 640's largest power-of-two divisor
    (4, 2048, 640, 256),
    (8, 262144, 640, 128),  # the output projection
    (8, 1000, 640, 0),      # 1000 = 8 x 125: blocks of 8 rows are too small
    (8, 641, 640, 0),       # odd: no whole blocks
])
def test_block_rows(rows, out, width, block):
    assert cpu_blocked.block_rows(rows, out, width) == block
    if block:
        assert out % block == 0 and rows * block * width <= cpu_blocked.BLOCK_WORK


@pytest.mark.parametrize("split_min", [0, 1 << 40])
@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("out,width", [(256, 64), (96, 48), (4096, 32)])
def test_blocked_matmul_matches_matmul(rows, out, width, split_min, monkeypatch):
    monkeypatch.setattr(cpu_blocked, "SPLIT_MIN", split_min)
    rng = np.random.default_rng(rows * out)
    w = mx.array(rng.standard_normal((out, width), dtype=np.float32))
    x = mx.array(rng.standard_normal((rows, 1, width), dtype=np.float32))
    y = cpu_blocked.blocked_matmul(x, w)
    assert y is not None and y.shape == (rows, 1, out)
    np.testing.assert_allclose(np.array(y), np.array(x @ w.T), rtol=1e-5, atol=1e-5)


def test_blocked_matmul_declines():
    w = mx.ones((256, 64))
    assert cpu_blocked.blocked_matmul(mx.ones((cpu_blocked.MAX_ROWS + 1, 64)), w) is None
    assert cpu_blocked.blocked_matmul(mx.ones((2, 64), dtype=mx.bfloat16),
                                      w.astype(mx.bfloat16)) is None
    assert cpu_blocked.blocked_matmul(mx.ones((2, 64)), mx.ones((257, 64))) is None


def test_second_stream_from_another_thread(monkeypatch):
    """MLX streams belong to the thread that made them: the engine's own thread gets one."""
    monkeypatch.setattr(cpu_blocked, "SPLIT_MIN", 0)
    w = mx.array(np.arange(256 * 64, dtype=np.float32).reshape(256, 64) / 1e4)
    x = mx.ones((2, 64))
    want = np.array(x @ w.T)
    got, errors = [], []

    def run():
        try:
            got.append(np.array(cpu_blocked.blocked_matmul(x, w)))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    for _ in range(2):
        t = threading.Thread(target=run)
        t.start()
        t.join()
    assert not errors
    for g in got:
        np.testing.assert_allclose(g, want, rtol=1e-5)


@pytest.mark.parametrize("arch", ["tiny_llama_dir", "tiny_gemma_dir"])
def test_installed_model_same_logits_and_tokens(arch, request, monkeypatch):
    monkeypatch.setattr(cpu_blocked, "SPLIT_MIN", 0)  # the two-stream path everywhere
    monkeypatch.setattr(cpu_blocked, "OPENBLAS", True)  # as in a server (platform.py preloads it)
    model, _ = load_model(request.getfixturevalue(arch))
    model.set_dtype(mx.float32)
    one, few = mx.array([[3]]), mx.array([[3], [17], [42], [9], [5]])
    prompt = mx.array([list(range(3, 3 + cpu_blocked.MAX_ROWS + 4))])  # MLX's own matmul
    before = [model(t) for t in (one, few, prompt)]
    mx.eval(before)
    n = cpu_blocked.install(model)
    assert n == sum(1 for _, m in model.named_modules() if type(m) is cpu_blocked._BlockedLinear)
    assert n >= 7 * len(model.layers)
    seen = []
    real = cpu_blocked.blocked_matmul
    monkeypatch.setattr(cpu_blocked, "blocked_matmul",
                        lambda x, w: seen.append(x.size // x.shape[-1]) or real(x, w))
    after = [model(t) for t in (one, few, prompt)]
    assert seen.count(1) >= 7 * len(model.layers) and seen.count(5) >= 7 * len(model.layers)
    for a, b in zip(after[:2], before[:2]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-4)
        assert mx.argmax(a, -1).tolist() == mx.argmax(b, -1).tolist()
    assert mx.array_equal(after[2], before[2]).item()
    assert cpu_blocked.uninstall(model) == n
    assert not any(type(m) is cpu_blocked._BlockedLinear for _, m in model.named_modules())


def test_not_for_other_dtypes(tiny_llama_dir, monkeypatch):
    monkeypatch.setattr(cpu_blocked, "OPENBLAS", True)
    model, _ = load_model(tiny_llama_dir)
    model.set_dtype(mx.bfloat16)
    assert cpu_blocked.install(model) == 0


def test_off_unless_mlx_calls_openblas(tiny_llama_dir, monkeypatch):
    monkeypatch.setattr(cpu_blocked, "OPENBLAS", False)
    model, _ = load_model(tiny_llama_dir)
    model.set_dtype(mx.float32)
    assert cpu_blocked.install(model) == 0
