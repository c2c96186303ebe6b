"""Tiny GGUFs for each supported architecture: import -> mlx_lm.load -> same model, same tokens."""

from __future__ import annotations

import json
import logging

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.utils import _get_classes, load

from mlx_server.loading import import_gguf
from mlx_server.loading.chat_templates import CHATML, GEMMA3

from .conftest import ARCHES
from .tiny_gguf import TEXTS, TinyGGUF, llama_cpp_permute, reference_weights, write_tiny_gguf

IDS = mx.array([[1, 5, 9, 30, 40, 50, 60, 70, 80, 90, 100, 7]])  # longer than gemma's window


def _direct_model(tiny: TinyGGUF, weights: dict[str, np.ndarray]):
    model_cls, args_cls = _get_classes(tiny.config)
    model = model_cls(args_cls.from_dict(tiny.config))
    arrays = model.sanitize({k: mx.array(v) for k, v in weights.items()})
    model.load_weights(list(arrays.items()))  # strict: every parameter, no extras
    return model


@pytest.mark.parametrize("arch", ARCHES)
def test_logits_equal_direct_mlx_lm_model(arch, tiny_ggufs, imported):
    tiny = tiny_ggufs[arch]
    model, _ = load(str(imported[arch]))
    want = _direct_model(tiny, reference_weights(tiny))(IDS)
    got = model(IDS)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-5)


def test_llama_test_would_catch_a_missing_unpermute(tiny_ggufs, imported):
    """Sanity check of the test above: llama.cpp's q/k row order gives different logits."""
    tiny = tiny_ggufs["llama"]
    weights = dict(tiny.weights)
    for name, heads in (("q_proj", 4), ("k_proj", 2)):
        key = f"model.layers.0.self_attn.{name}.weight"
        weights[key] = llama_cpp_permute(weights[key], heads)
    wrong = _direct_model(tiny, weights)(IDS)
    model, _ = load(str(imported["llama"]))
    assert float(mx.abs(model(IDS) - wrong).max()) > 1e-2


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_matches_its_source_and_round_trips(arch, text, tiny_ggufs, imported):
    tiny = tiny_ggufs[arch].tokenizer
    _, tok = load(str(imported[arch]))
    bos = [tiny.special["bos"]] if tiny.add_bos else []
    ids = tok.encode(text)
    assert ids == bos + tiny.encode(text)
    assert tok.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("arch", ["gemma3", "qwen3"])
def test_control_tokens_stay_whole(arch, tiny_ggufs, imported):
    _, tok = load(str(imported[arch]))
    marker = "<start_of_turn>" if arch == "gemma3" else "<|im_start|>"
    marker_id = tiny_ggufs[arch].tokenizer.tokens.index(marker)
    assert marker_id in tok.encode(f"{marker}user\nhi")
    assert tok.decode([marker_id]) == marker


def test_model_folder_files(imported):
    folder = imported["gemma3"]
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ]:
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gemma3_text"
    assert config["sliding_window_pattern"] == 2 and config["query_pre_attn_scalar"] == 32
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok_config["bos_token"] == "<bos>" and tok_config["eos_token"] == "<eos>"
    assert tok_config["pad_token"] == "<pad>" and tok_config["add_bos_token"] is True


def test_gemma_fallback_template_and_end_of_turn_eos(tiny_ggufs, imported):
    folder = imported["gemma3"]
    end_of_turn = tiny_ggufs["gemma3"].tokenizer.tokens.index("<end_of_turn>")
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [1, end_of_turn]
    _, tok = load(str(folder))
    assert end_of_turn in tok.eos_token_ids
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )


def test_fallback_template_is_logged(tiny_ggufs, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mlx_server.loading"):
        folder = import_gguf(tiny_ggufs["qwen3"].path, cache_root=tmp_path, progress=False)
    assert "built-in qwen3 template" in caplog.text
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHATML
    assert config["chat_template"] != GEMMA3


def test_embedded_chat_template_wins(tmp_path, caplog):
    template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    tiny = write_tiny_gguf(tmp_path, "qwen2", chat_template=template)
    with caplog.at_level(logging.WARNING, logger="mlx_server.loading"):
        folder = import_gguf(tiny.path, cache_root=tmp_path / "cache", progress=False)
    assert "fallback" not in caplog.text
    _, tok = load(str(folder))
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == "[x]"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_import(dtype, tiny_ggufs, tmp_path):
    tiny = tiny_ggufs["qwen3"]
    folder = import_gguf(tiny.path, dtype=dtype, cache_root=tmp_path, progress=False)
    model, _ = load(str(folder))
    assert model.model.embed_tokens.weight.dtype == getattr(mx, dtype)
    want = _direct_model(tiny, tiny.weights)(IDS)
    got = model(IDS).astype(mx.float32)
    assert float(mx.abs(got - want).max()) < 0.1 * float(mx.abs(want).max())


def test_large_models_are_sharded(tiny_ggufs, tmp_path):
    from mlx_server.loading.gguf_file import read_gguf
    from mlx_server.loading.gguf_import import build_model_folder

    tiny = tiny_ggufs["llama"]
    gguf = read_gguf(tiny.path)
    build_model_folder(gguf, tmp_path, progress=False, max_shard_bytes=64 * 1024)
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and not (tmp_path / "model.safetensors").exists()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    model, _ = load(str(tmp_path))
    want = _direct_model(tiny, tiny.weights)(IDS)
    np.testing.assert_allclose(np.array(model(IDS)), np.array(want), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    out = tmp_path_factory.mktemp("llama3")
    tiny = write_tiny_gguf(out, "llama", tokenizer="llama3")
    return tiny, import_gguf(tiny.path, cache_root=out / "cache", progress=False)


@pytest.mark.parametrize("text", TEXTS)
def test_llama3_byte_level_tokenizer_with_bos(llama3, text):
    tiny, folder = llama3
    _, tok = load(str(folder))
    ids = tok.encode(text)
    assert ids == [tiny.tokenizer.special["bos"]] + tiny.tokenizer.encode(text)
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_llama3_template_and_eot(llama3):
    tiny, folder = llama3
    model, tok = load(str(folder))
    assert tiny.tokenizer.special["eot"] in tok.eos_token_ids
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    want = _direct_model(tiny, tiny.weights)(IDS)
    np.testing.assert_allclose(np.array(model(IDS)), np.array(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHES)
def test_added_tokens_keep_their_ids(arch, tiny_ggufs, imported):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(imported[arch] / "tokenizer.json"))
    tokens = tiny_ggufs[arch].tokenizer.tokens
    assert tok.get_vocab_size(with_added_tokens=True) == len(tokens)
    for token_id, added in tok.get_added_tokens_decoder().items():
        # Gemma's space runs are respelled from "  " to "▁▁".
        assert added.content.replace("\u2581", " ") == tokens[token_id].replace("\u2581", " ")
