"""Gemma's gelu(gate) * up as one compiled kernel (engine/gelu_gate.py)."""

import mlx.core as mx
from mlx import nn
from mlx_lm.models import gemma3_text
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import load_model

from mlx_server.engine import gelu_gate


def _logits(model, prompt=(2, 5, 9, 14), steps=4):
    cache = make_prompt_cache(model)
    logits = model(mx.array([prompt]), cache=cache)[:, -1]
    for _ in range(steps):
        logits = model(mx.argmax(logits, axis=-1)[:, None], cache=cache)[:, -1]
    return logits


def test_off_on_cpu_unless_asked(tiny_gemma_dir):
    model, _ = load_model(tiny_gemma_dir)
    assert gelu_gate.install(model) == 0


def test_bit_identical_in_float32_and_bfloat16(tiny_gemma_dir):
    for dtype in (mx.float32, mx.bfloat16):
        model, _ = load_model(tiny_gemma_dir)
        model.set_dtype(dtype)
        before = _logits(model)
        assert gelu_gate.install(model, on_cpu=True) == len(model.layers)
        assert all(type(layer.mlp) is not gemma3_text.MLP for layer in model.layers)
        after = _logits(model)
        assert after.dtype == dtype
        assert mx.array_equal(after, before).item()


def test_gelu_mul_is_the_unfused_math():
    g = mx.random.normal((3, 64), key=mx.random.key(1)).astype(mx.bfloat16)
    u = mx.random.normal((3, 64), key=mx.random.key(2)).astype(mx.bfloat16)
    assert mx.array_equal(gelu_gate.gelu_mul(g, u), nn.gelu_approx(g) * u).item()
    # A strided input (what a fused gate/up matmul hands over) gives the same.
    gu = mx.concatenate([g, u], axis=-1)
    assert mx.array_equal(gelu_gate.gelu_mul(gu[:, :64], gu[:, 64:]), nn.gelu_approx(g) * u).item()


def test_other_mlps_left_alone(tiny_llama_dir):
    model, _ = load_model(tiny_llama_dir)
    assert gelu_gate.install(model, on_cpu=True) == 0


def test_uninstall_restores_the_classes(tiny_gemma_dir):
    model, _ = load_model(tiny_gemma_dir)
    n = gelu_gate.install(model, on_cpu=True)
    assert gelu_gate.uninstall(model) == n
    assert all(type(layer.mlp) is gemma3_text.MLP for layer in model.layers)
    assert gelu_gate.install(model, on_cpu=True) == n
