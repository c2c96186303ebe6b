"""Sibling projections (q/k/v, gate/up) as one matmul per group (engine/proj_fuse.py)."""

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten
from mlx_lm.utils import load_model

from greedy_decode import greedy

from mlx_server.engine import proj_fuse


def _params(model):
    return dict(tree_flatten(model.parameters()))


def test_off_on_cpu_unless_asked(tiny_gemma_dir):
    model, _ = load_model(tiny_gemma_dir)
    assert mx.default_device() == mx.cpu
    assert proj_fuse.install(model) == 0
    assert all(type(m) is not proj_fuse.FusedLinear for _, m in model.named_modules())


def test_same_logits_and_same_parameters(tiny_gemma_dir, tiny_llama_dir):
    for path in (tiny_gemma_dir, tiny_llama_dir):
        model, _ = load_model(path)
        before_tokens, before = greedy(model, [2, 5, 9, 14])
        params = _params(model)

        assert proj_fuse.install(model, on_cpu=True) == 2 * len(model.layers)
        fused = [m for _, m in model.named_modules() if type(m) is proj_fuse.FusedLinear]
        assert len(fused) == 5 * len(model.layers)
        after_tokens, after = greedy(model, [2, 5, 9, 14])
        assert after_tokens == before_tokens
        assert mx.array_equal(after, before).item()
        # Same names, same values: saving or adapting the model sees the original weights.
        now = _params(model)
        assert sorted(now) == sorted(params)
        assert all(mx.array_equal(now[k], params[k]).item() for k in params)
        assert proj_fuse.install(model, on_cpu=True) == 0  # idempotent


def test_members_share_one_buffer_and_hold_no_activations(tiny_gemma_dir):
    model, _ = load_model(tiny_gemma_dir)
    proj_fuse.install(model, on_cpu=True)
    attn = model.layers[0].self_attn
    group, _ = attn.q_proj.__dict__["_fused_group"]
    assert group.weight.shape[0] == sum(m.weight.shape[0] for m in (attn.q_proj, attn.k_proj, attn.v_proj))
    greedy(model, [3, 4], steps=1)
    assert group.x is None and group.out is None  # every member served: nothing kept


def test_each_member_uses_its_own_input(tiny_gemma_dir):
    model, _ = load_model(tiny_gemma_dir)
    proj_fuse.install(model, on_cpu=True)
    attn = model.layers[0].self_attn
    dim = attn.q_proj.weight.shape[1]
    x1 = mx.random.normal((1, 2, dim), key=mx.random.key(1))
    x2 = mx.random.normal((1, 2, dim), key=mx.random.key(2))
    q, k = attn.q_proj(x1), attn.k_proj(x2)  # not one activation: k must not reuse q's matmul
    assert mx.allclose(q, x1 @ attn.q_proj.weight.T).item()
    assert mx.allclose(k, x2 @ attn.k_proj.weight.T).item()
    assert mx.allclose(attn.q_proj(x1), q).item()  # the same member again: recomputed, same value


def test_replaced_weight_is_used(tiny_gemma_dir):
    model, _ = load_model(tiny_gemma_dir)
    proj_fuse.install(model, on_cpu=True)
    attn = model.layers[0].self_attn
    x = mx.random.normal((1, 3, attn.k_proj.weight.shape[1]), key=mx.random.key(7))
    first = attn.k_proj(x)
    attn.q_proj(x)
    attn.v_proj(x)
    attn.k_proj.weight = attn.k_proj.weight + 1.0  # e.g. load_weights / update after install
    attn.q_proj(x)
    k = attn.k_proj(x)
    assert mx.allclose(k, x @ attn.k_proj.weight.T).item()
    assert not mx.allclose(k, first).item()


def test_biases_are_fused_too():
    holder = nn.Module()
    holder.q_proj, holder.k_proj, holder.v_proj = (nn.Linear(8, n, bias=True) for n in (8, 4, 4))
    x = mx.random.normal((2, 8), key=mx.random.key(3))
    expected = [holder[n](x) for n in ("q_proj", "k_proj", "v_proj")]
    assert proj_fuse.install(holder, on_cpu=True) == 1
    got = [holder[n](x) for n in ("q_proj", "k_proj", "v_proj")]
    assert all(mx.allclose(g, e).item() for g, e in zip(got, expected))


def test_mismatched_or_quantized_groups_left_alone(tiny_llama_dir):
    holder = nn.Module()
    holder.q_proj, holder.k_proj, holder.v_proj = nn.Linear(8, 8), nn.Linear(8, 4), nn.Linear(6, 4)
    assert proj_fuse.install(holder, on_cpu=True) == 0  # v reads another width
    model, _ = load_model(tiny_llama_dir)
    nn.quantize(model, group_size=32, bits=4)
    assert proj_fuse.install(model, on_cpu=True) == 0


def test_uninstall_restores_the_classes(tiny_gemma_dir):
    model, _ = load_model(tiny_gemma_dir)
    before_tokens, before = greedy(model, [2, 5, 9, 14])
    n = proj_fuse.install(model, on_cpu=True)
    assert proj_fuse.uninstall(model) == 5 * n // 2
    assert all(type(m) is not proj_fuse.FusedLinear for _, m in model.named_modules())
    tokens, logits = greedy(model, [2, 5, 9, 14])
    assert tokens == before_tokens and mx.array_equal(logits, before).item()
    assert proj_fuse.install(model, on_cpu=True) == n
