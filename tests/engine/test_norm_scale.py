"""Gemma's offset RMSNorm with its (1 + weight) scale computed once (engine/norm_scale.py)."""

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models import gemma3_text
from mlx_lm.utils import load_model

from greedy_decode import greedy

from mlx_server.engine import norm_scale


def _norms(model):
    return [m for _, m in model.named_modules() if isinstance(m, gemma3_text.RMSNorm)]


def test_same_logits_bit_for_bit_and_same_parameters(tiny_gemma_dir):
    model, _ = load_model(tiny_gemma_dir)
    # Non-zero norm weights, so a lost "1 +" or a stale scale would show.
    for i, n in enumerate(_norms(model)):
        n.weight = mx.random.normal(n.weight.shape, key=mx.random.key(i)) * 0.5
    mx.eval(model.parameters())
    before_tokens, before = greedy(model, [2, 5, 9, 14])
    keys = sorted(k for k, _ in tree_flatten(model.parameters()))

    n = norm_scale.install(model)
    layers = len(model.model.layers)
    assert n == 6 * layers + 1  # 4 per block, q/k norms, the final norm
    after_tokens, after = greedy(model, [2, 5, 9, 14])
    assert after_tokens == before_tokens
    assert mx.array_equal(after, before).item()
    # The cached scale lives outside the parameter tree: saving/loading sees the same weights.
    assert sorted(k for k, _ in tree_flatten(model.parameters())) == keys
    assert norm_scale.install(model) == 0  # idempotent


def test_replaced_weight_is_used(tiny_gemma_dir):
    model, _ = load_model(tiny_gemma_dir)
    norm_scale.install(model)
    norm = model.model.norm
    x = mx.random.normal((1, 3, norm.weight.shape[0]), key=mx.random.key(7))
    first = norm(x)
    norm.weight = norm.weight + 1.0  # e.g. model.update / load_weights after install
    expected = mx.fast.rms_norm(x, 1.0 + norm.weight, norm.eps)
    assert mx.array_equal(norm(x), expected).item()
    assert not mx.array_equal(norm(x), first).item()


def test_other_norms_left_alone(tiny_llama_dir):
    class Scaled(nn.Module):  # the same fields, a different body
        def __init__(self):
            super().__init__()
            self.weight = mx.ones((4,))
            self.eps = 1e-6

        def __call__(self, x):
            return mx.fast.rms_norm(x, 2.0 + self.weight, self.eps)

    model, _ = load_model(tiny_llama_dir)  # llama's nn.RMSNorm has no offset
    assert norm_scale.install(model) == 0
    holder = nn.Module()
    holder.norm = Scaled()
    assert norm_scale.install(holder) == 0
    assert type(holder.norm) is Scaled


def test_uninstall_restores_the_classes(tiny_gemma_dir):
    model, _ = load_model(tiny_gemma_dir)
    n = norm_scale.install(model)
    assert norm_scale.uninstall(model) == n
    assert all(type(m) is gemma3_text.RMSNorm for m in _norms(model))
    assert norm_scale.install(model) == n

