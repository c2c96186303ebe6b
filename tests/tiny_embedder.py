"""A tiny random-weight Qwen3-Embedding-style folder: mlx-lm weights, a real tokenizer, and
the sentence-transformers files (modules.json, pooling config) a real one ships."""

from __future__ import annotations

import json
from pathlib import Path

from tiny_model import build_tokenizer

MAX_SEQ_LENGTH = 48


def build_qwen3_embedder(out: Path, pooling: str = "lasttoken",
                         matryoshka: list[int] | None = None, seed: int = 0) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": 64,
        "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-6,
        "vocab_size": build_tokenizer(out), "max_position_embeddings": 512,
        "tie_word_embeddings": True, "rope_theta": 10000.0, "torch_dtype": "float32",
    }
    if matryoshka is not None:
        config["matryoshka_dimensions"] = matryoshka
    model_cls, args_cls = _get_classes(config)
    mx.random.seed(seed)
    model = model_cls(args_cls.from_dict(config))
    weights = {k: v * 4 if v.ndim == 2 else v for k, v in tree_flatten(model.parameters())}
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config))
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"},
    ]))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(
        {"embedding_dimension": 64, "pooling_mode": pooling, "include_prompt": True}))
    (out / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False}))
    return out


def running_embedder(tmp_dir: Path):
    """A tiny Qwen3-style embedder (Matryoshka 16/32) served by a ready EmbeddingEngine;
    a generator for module-scoped fixtures."""
    from mlx_server.embeddings.engine import EmbeddingEngine
    from mlx_server.embeddings.model import load_embedding_model

    model = load_embedding_model(build_qwen3_embedder(tmp_dir / "e", matryoshka=[16, 32]))
    engine = EmbeddingEngine(lambda: model, "tiny-embed").start()
    assert engine.wait_ready(60)
    yield engine
    engine.shutdown()
