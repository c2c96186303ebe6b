"""Embedding models: the real all-MiniLM-L6-v2 (encoder) and a tiny Qwen3 decoder, checked
against sentence-transformers (torch) where that reference is installed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from tiny_embedder import MAX_SEQ_LENGTH

from mlx_server.embeddings.model import load_embedding_model
from mlx_server.engine.types import ModelLoadError

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "hello world",
    "Paris is the capital of France.",
    "Embeddings map text to vectors; similar meanings land close together.",
    "Émoji ☃, ünïcödé and CJK 東京 are tokenized too.",
    "def add(a, b):\n    return a + b",
    " ".join(["a long input that runs on and on"] * 30),  # ~240 tokens, near the limit
    "x",
]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def _sentence_transformer(path):
    pytest.importorskip("torch", reason="the reference needs torch (the 'reference' extra)")
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(path), device="cpu")


def test_minilm_settings_come_from_its_config(minilm):
    assert (minilm.kind, minilm.pooling, minilm.dim) == ("encoder", "mean", 384)
    assert minilm.max_length == 256  # sentence_bert_config.json, not the 512 positions
    assert minilm.matryoshka_dims is None


def test_minilm_rows_are_unit_length_and_batching_is_invisible(minilm):
    seqs = [minilm.tokenizer.encode(t).ids for t in TEXTS]
    batched = minilm.embed(seqs)
    one_by_one = np.concatenate([minilm.embed([s]) for s in seqs])
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert _cosines(batched, one_by_one).min() > 0.99999


def test_minilm_similar_texts_are_closer(minilm):
    a, b, c = minilm.embed([minilm.tokenizer.encode(t).ids for t in
                            ["A cat sits on the mat.", "A kitten is sitting on a rug.",
                             "Quarterly revenue grew by eight percent."]])
    assert a @ b > a @ c + 0.3


@pytest.mark.reference
def test_minilm_matches_sentence_transformers(minilm, minilm_dir):
    ref = _sentence_transformer(minilm_dir).encode(TEXTS, convert_to_numpy=True)
    ours = minilm.embed([minilm.tokenizer.encode(t).ids for t in TEXTS])
    cos = _cosines(ours, ref)
    assert cos.min() >= 0.999, cos
    assert cos.min() >= 0.99999  # in practice float32 agrees to ~1e-7


def test_decoder_uses_last_token_pooling_from_its_config(qwen3_embedder):
    m = qwen3_embedder
    assert (m.kind, m.pooling, m.dim, m.max_length) == ("decoder", "last", 64, MAX_SEQ_LENGTH)
    assert m.matryoshka_dims == (16, 32)


def test_decoder_right_padding_does_not_change_vectors(qwen3_embedder):
    m = qwen3_embedder
    seqs = [m.tokenizer.encode(t).ids for t in TEXTS[:6]]
    batched = m.embed(seqs)
    one_by_one = np.concatenate([m.embed([s]) for s in seqs])
    assert _cosines(batched, one_by_one).min() > 0.99999
    # Last-token pooling: a prefix changes the vector (attention is causal, the last token
    # sees everything before it).
    full, prefix = m.embed([seqs[0], seqs[0][:-1]])
    assert full @ prefix < 0.999


def test_pooling_flag_overrides_the_config(qwen3_embedder_dir, qwen3_embedder):
    mean = load_embedding_model(qwen3_embedder_dir, pooling="mean")
    assert mean.pooling == "mean"
    seq = mean.tokenizer.encode(TEXTS[0]).ids
    assert float(mean.embed([seq])[0] @ qwen3_embedder.embed([seq])[0]) < 0.999


@pytest.mark.reference
def test_decoder_matches_sentence_transformers(qwen3_embedder, qwen3_embedder_dir):
    ref = _sentence_transformer(qwen3_embedder_dir).encode(TEXTS[:6], convert_to_numpy=True)
    # sentence-transformers cuts inputs at max_seq_length silently; the truncating
    # tokenizer does the same (the server only uses it when a request asks).
    tok = qwen3_embedder.truncating_tokenizer
    ours = qwen3_embedder.embed([tok.encode(t).ids for t in TEXTS[:6]])
    assert _cosines(ours, ref).min() >= 0.999


def test_truncating_tokenizer_keeps_special_tokens(minilm):
    long = " ".join(["word"] * 600)
    full = minilm.tokenizer.encode(long).ids
    cut = minilm.truncating_tokenizer.encode(long).ids
    assert len(full) > 600 and len(cut) == 256
    assert cut[0] == full[0] and cut[-1] == full[-1]  # [CLS] ... [SEP]


def test_unsupported_architecture_is_a_load_error(tmp_path, minilm_dir):
    shutil.copy(minilm_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no_such_arch"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="no_such_arch"):
        load_embedding_model(tmp_path)


def test_missing_tokenizer_is_a_load_error(tmp_path, qwen3_embedder_dir):
    for f in ("config.json", "model.safetensors"):
        shutil.copy(qwen3_embedder_dir / f, tmp_path / f)
    with pytest.raises(ModelLoadError, match="tokenizer.json"):
        load_embedding_model(tmp_path)
