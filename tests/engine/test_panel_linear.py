"""The layers' linears through the panel kernel (engine/panel_linear.py) on tiny models."""

import mlx.core as mx
import numpy as np
import pytest
from mlx import nn
from mlx.utils import tree_flatten
from mlx_lm.utils import load_model
from tiny_model import build_model

from mlx_server.engine import panel_head, panel_linear, panels

pytestmark = pytest.mark.skipif(panels.kernel() is None, reason="no C compiler here")

INPUTS = ([[3]], [[3], [17], [42], [9], [5]], [list(range(3, 40))])  # 1 row, 5, a prompt


def _model(path, dtype=mx.float32):
    model, _ = load_model(path)
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    return model


def _linears(model):
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())
            if k.endswith(("proj.weight", "proj.bias"))}


@pytest.mark.parametrize("arch,extra", [("llama", {}), ("gemma3_text", {}),
                                        ("llama", {"attention_bias": True})])
def test_same_logits_four_kernel_calls_a_layer_prompts_lazy(arch, extra, tmp_path, monkeypatch):
    model = _model(build_model(tmp_path / arch, arch, **extra))
    weights = _linears(model)
    assert not extra or any(k.endswith("q_proj.bias") for k in weights)
    before = [model(mx.array(t)) for t in INPUTS]
    mx.eval(before)
    assert panel_head.install(model)  # as the loader does: the head first, then the layers
    assert panel_linear.install(model) == 7 * 4
    assert panel_linear.install(model) == 0  # once
    attn = model.model.layers[0].self_attn
    stack = attn.q_proj.__dict__["_panel_stack"][0]
    assert attn.k_proj.__dict__["_panel_stack"][0] is stack and len(stack.members) == 3
    calls = []
    real = panels.matmul
    monkeypatch.setattr(panels, "matmul", lambda w, x: calls.append(x.shape) or real(w, x))
    after = [model(mx.array(t)) for t in INPUTS]
    mx.eval(after)
    # q/k/v, o, gate/up, down: four products a layer (and the head's) for decode rows;
    # none for a prompt
    assert [c[0] for c in calls] == [1] * 17 + [5] * 17
    assert stack.x is None and stack.out is None  # no activations held between calls
    for a, b in zip(after, before):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-4)
        assert mx.argmax(a, -1).tolist() == mx.argmax(b, -1).tolist()
    assert panel_linear.uninstall(model) == 7 * 4
    assert type(attn.q_proj) is nn.Linear
    restored = _linears(model)
    assert restored.keys() == weights.keys()
    assert all(np.array_equal(restored[k], weights[k]) for k in weights)


def test_member_called_twice_with_one_input_recomputes(tiny_llama_dir):
    model = _model(tiny_llama_dir)
    panel_linear.install(model)
    attn = model.model.layers[0].self_attn
    x = mx.random.normal((2, 1, 64))
    q1 = attn.q_proj(x)
    q2 = attn.q_proj(x)  # no k/v between: a fresh product, same values
    assert mx.array_equal(q1, q2).item()
    assert attn.k_proj(x).shape == (2, 1, 32)


def test_left_alone_where_it_cannot_apply(tiny_llama_dir, tmp_path, monkeypatch):
    assert panel_linear.install(_model(tiny_llama_dir, mx.bfloat16)) == 0
    # gate/up of 72 rows are not whole panels: they keep MLX; down (64 x 72) is packed
    odd = _model(build_model(tmp_path / "odd", "llama", intermediate_size=72))
    assert panel_linear.install(odd) == 5 * 4  # q, k, v, o, down
    mlp = odd.model.layers[0].mlp
    assert type(mlp.gate_proj) is nn.Linear and type(mlp.down_proj) is panel_linear.PanelLinear
    monkeypatch.setattr(panels, "kernel", lambda: None)
    assert panel_linear.install(_model(tiny_llama_dir)) == 0
