"""numpy's gelu, attention softmax and logsumexp (engine/cpu_ops.py) against MLX's own."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm.generate import BatchGenerator
from mlx_lm.models import base
from mlx_lm.utils import load_model

from mlx_server.engine import cpu_ops


@pytest.fixture
def everywhere(monkeypatch):
    """Take the numpy path at every size (the tiny models' tensors are below the cut)."""
    for name in ("MIN_ACTIVATION", "MIN_SOFTMAX", "MIN_LOGSUMEXP"):
        monkeypatch.setattr(cpu_ops, name, 0)


def _close(a, b, tol=2e-6):
    a, b = np.array(a), np.array(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_gelu_matches_mlx(everywhere):
    x = mx.random.normal((3, 7, 300)) * 4
    _close(cpu_ops.gelu_approx(x), cpu_ops._mlx_gelu_approx(x))
    big = mx.random.normal((944, 2048))
    cpu_ops.MIN_ACTIVATION = 1 << 15
    _close(cpu_ops.gelu_approx(big), cpu_ops._mlx_gelu_approx(big))


def test_small_or_other_dtypes_keep_mlx():
    calls = []
    x = mx.random.normal((4, 8)).astype(mx.bfloat16)
    real = cpu_ops._np
    cpu_ops._np = lambda a: calls.append(a.shape) or real(a)
    try:
        cpu_ops.gelu_approx(x)
        cpu_ops.gelu_approx(mx.random.normal((2, 16)))  # float32 but small
        cpu_ops.logsumexp(mx.random.normal((2, 16)), axis=-1)
    finally:
        cpu_ops._np = real
    assert calls == []


@pytest.mark.parametrize("keepdims", [True, False])
def test_logsumexp_matches_mlx(everywhere, keepdims):
    x = mx.random.normal((5, 70_000)) * 10
    _close(cpu_ops.logsumexp(x, axis=-1, keepdims=keepdims),
           mx.logsumexp(x, axis=-1, keepdims=keepdims), tol=1e-5)
    v = mx.random.normal((1000,))
    _close(cpu_ops.logsumexp(v, keepdims=keepdims), mx.logsumexp(v, keepdims=keepdims), 1e-5)
    # Another axis: MLX's own.
    _close(cpu_ops.logsumexp(x, axis=0), mx.logsumexp(x, axis=0))


def _bool_mask(b, q_len, k_len, pad):
    """Causal with left padding per row; padded query rows are fully masked."""
    i = mx.arange(k_len - q_len, k_len)[:, None]
    j = mx.arange(k_len)[None]
    m = (j <= i)[None, None] & (j >= mx.array(pad)[:, None, None, None])
    return mx.broadcast_to(m, (b, 1, q_len, k_len))


@pytest.mark.parametrize("heads,kv_heads", [(4, 1), (4, 4), (8, 2)])
@pytest.mark.parametrize("q_len,k_len", [(9, 9), (3, 12), (1, 20)])
@pytest.mark.parametrize("mask_kind", [None, "causal", "bool", "additive"])
def test_attention_matches_mlx(everywhere, heads, kv_heads, q_len, k_len, mask_kind):
    b, d = 2, 16
    q = mx.random.normal((b, heads, q_len, d))
    k = mx.random.normal((b, kv_heads, k_len, d))
    v = mx.random.normal((b, kv_heads, k_len, d))
    mask = mask_kind
    if mask_kind == "bool":
        mask = _bool_mask(b, q_len, k_len, [0, 2])
    elif mask_kind == "additive":
        mask = mx.random.normal((b, 1, q_len, k_len))
    cpu_ops._installed.setdefault("sdpa", base.scaled_dot_product_attention)
    try:
        ours = cpu_ops.scaled_dot_product_attention(q, k, v, cache=None, scale=0.25, mask=mask)
    finally:
        if "sdpa_mod" not in cpu_ops._installed:
            cpu_ops._installed.pop("sdpa")
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)
    _close(ours, ref, tol=1e-5)


def _greedy(model, prompts, steps=12):
    gen = BatchGenerator(model, completion_batch_size=len(prompts),
                         prefill_batch_size=len(prompts))
    uids = gen.insert(prompts, max_tokens=[steps] * len(prompts))
    out = {u: [] for u in uids}
    while True:
        _, rs = gen._next()
        for r in rs:
            out[r.uid].append(r.token)
        if rs and all(len(t) == steps for t in out.values()):
            return [out[u] for u in uids]


@pytest.mark.parametrize("arch", ["tiny_gemma_dir", "tiny_llama_dir"])
def test_batched_greedy_tokens_unchanged(everywhere, arch, request):
    """Left-padded rows of different lengths, prefill and decode, on a real mlx-lm model."""
    model, _ = load_model(request.getfixturevalue(arch))
    model.set_dtype(mx.float32)
    prompts = [[5, 9, 23, 7, 81, 3, 14, 2, 60, 33, 4], [11, 2], [40, 41, 42, 43, 44]]
    cpu_ops.uninstall()
    before = _greedy(model, prompts)
    assert cpu_ops.install(model)
    assert nn.gelu_approx is cpu_ops.gelu_approx
    try:
        after = _greedy(model, prompts)
    finally:
        cpu_ops.uninstall()
    assert nn.gelu_approx is cpu_ops._mlx_gelu_approx
    assert after == before


def test_not_installed_off_float32(tiny_gemma_dir):
    model, _ = load_model(tiny_gemma_dir)
    model.set_dtype(mx.bfloat16)
    cpu_ops.uninstall()
    assert not cpu_ops.install(model)
    assert nn.gelu_approx is cpu_ops._mlx_gelu_approx
