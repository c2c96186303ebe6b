"""A small random-weight Qwen3 / Qwen2 folder that really splits across two ranks."""

from __future__ import annotations

import json
from pathlib import Path

from tiny_model import build_tokenizer


def build_sharded_model(out: Path, arch: str = "qwen3", seed: int = 0) -> Path:
    """hidden 256, 4 layers, 4 query / 2 KV heads: tensor parallel over 2 ranks splits every
    projection, pipeline parallel gives each rank 2 layers. float32, so the only difference
    from one process is the order of the sums."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    out.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(out)
    config = {
        "model_type": arch, "hidden_size": 256, "num_hidden_layers": 4,
        "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 64, "rms_norm_eps": 1e-6, "vocab_size": vocab,
        "max_position_embeddings": 512, "rope_theta": 10000.0, "tie_word_embeddings": True,
    }
    model_cls, args_cls = _get_classes(config)
    mx.random.seed(seed)
    model = model_cls(args_cls.from_dict(config))
    # Larger than the init, so outputs depend strongly on the input (as tiny_model does).
    weights = {k: v * 4 if v.ndim == 2 else v for k, v in tree_flatten(model.parameters())}
    mx.save_safetensors(str(out / "model.safetensors"), weights)
    # sharded_load's pipeline mode reads the index to pick each stage's files.
    index = {"metadata": {}, "weight_map": {k: "model.safetensors" for k in weights}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    (out / "config.json").write_text(json.dumps(config))
    return out
