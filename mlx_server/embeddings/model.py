"""Loading an embedding model folder: token ids in, one unit vector per sequence out.

Encoders (BERT, XLM-RoBERTa, ModernBERT, ...) run on mlx-embeddings' model classes; decoders
(Qwen3-Embedding style: any architecture mlx-lm builds) run mlx-lm's backbone without its
LM head. Batches are right-padded: the encoder masks the padding, and a decoder's causal
attention never lets a real token see it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
import numpy as np
from mlx import nn

from ..engine.types import ModelLoadError
from .pooling import Pooling, PoolingConfigError, model_pooling, normalize, pool

log = logging.getLogger("mlx_server.embeddings")

Forward = Callable[[mx.array, mx.array], mx.array]  # (ids, mask) -> (batch, seq, hidden)
_DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
# RoBERTa-style position ids start after the padding index, so two positions are unusable.
_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "xlm_roberta": 2, "camembert": 2}


@dataclass
class EmbeddingModel:
    """A loaded embedding model and what the server needs to know about it."""

    path: Path
    kind: Literal["encoder", "decoder"]
    forward: Forward
    tokenizer: Any  # tokenizers.Tokenizer, never truncating
    truncating_tokenizer: Any  # the same, truncating to max_length
    pooling: Pooling
    max_length: int
    dim: int
    vocab_size: int
    # Sizes a Matryoshka model may be cut to: None (not one) only `dim`, () any size.
    matryoshka_dims: tuple[int, ...] | None
    dtype: str
    pad_id: int = 0

    def embed(self, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        """Embed a batch of token sequences: (len(seqs), dim) float32, rows of unit length."""
        lengths = [len(s) for s in seqs]
        ids = np.full((len(seqs), max(lengths)), self.pad_id, dtype=np.int32)
        mask = np.zeros_like(ids)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        mask_mx = mx.array(mask)
        hidden = self.forward(mx.array(ids), mask_mx)
        vecs = normalize(pool(hidden, mask_mx, mx.array(lengths), self.pooling))
        return np.array(vecs, dtype=np.float32)


def load_embedding_model(
    path: Path, pooling: str | None = None, dtype: str = "auto", max_length: int | None = None,
) -> EmbeddingModel:
    """Load `path` for embeddings; `pooling` (a flag) overrides the model's own config."""
    t0 = time.perf_counter()
    cfg = _read_json(path / "config.json")
    model_type = str(cfg.get("model_type", ""))
    if not model_type:
        raise ModelLoadError(f"{path}/config.json has no model_type")
    decoder = importlib.util.find_spec(f"mlx_lm.models.{model_type}") is not None
    module, forward = _load_decoder(path) if decoder else _load_encoder(path, model_type)
    if dtype != "auto":
        module.set_dtype(_DTYPES[dtype])
    try:
        chosen = pooling or model_pooling(path) or ("last" if decoder else "mean")
    except PoolingConfigError as e:
        raise ModelLoadError(str(e)) from e
    tok = _tokenizer(path)
    limit = _max_length(path, cfg, model_type)
    limit = min(limit, max_length) if max_length else limit
    truncating = tok.__class__.from_str(tok.to_str())
    truncating.enable_truncation(limit)
    dim = int(forward(mx.array([[0]]), mx.array([[1]])).shape[-1])  # also warms up
    model = EmbeddingModel(
        path=path, kind="decoder" if decoder else "encoder", forward=forward, tokenizer=tok,
        truncating_tokenizer=truncating, pooling=chosen,  # type: ignore[arg-type]
        max_length=limit, dim=dim, vocab_size=_vocab_size(cfg, tok),
        matryoshka_dims=_matryoshka(cfg), dtype=_dtype(module), pad_id=_pad_id(tok),
    )
    log.info("loaded embedding model %s (%s, %s pooling, dim %d, max %d tokens) in %.1fs",
             path, model.kind, model.pooling, dim, limit, time.perf_counter() - t0)
    return model


def _load_decoder(path: Path) -> tuple[nn.Module, Forward]:
    from mlx_lm.utils import load_model

    model, _ = load_model(path)
    backbone = getattr(model, "model", None) or getattr(
        getattr(model, "language_model", None), "model", None)
    if backbone is None:
        raise ModelLoadError(f"{path}: cannot find the transformer backbone of this "
                             f"{type(model).__module__} model for embeddings")
    mx.eval(model.parameters())
    return model, lambda ids, mask: backbone(ids)


def _load_encoder(path: Path, model_type: str) -> tuple[nn.Module, Forward]:
    try:
        from mlx_embeddings.utils import load_model
    except ModuleNotFoundError as e:
        if e.name is None or not e.name.startswith("mlx_embeddings"):
            raise
        raise ModelLoadError(
            f"{path} is a '{model_type}' encoder; serving it needs the embeddings extra: "
            "pip install 'mlx-server[embeddings]'") from e
    if importlib.util.find_spec(f"mlx_embeddings.models.{model_type.replace('-', '_')}") is None:
        raise ModelLoadError(f"{path}: model type '{model_type}' is supported neither by mlx-lm "
                             "nor by mlx-embeddings")
    model = load_model(path)
    return model, lambda ids, mask: model(ids, attention_mask=mask).last_hidden_state


def _tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    file = path / "tokenizer.json"
    if not file.is_file():
        raise ModelLoadError(f"{path} has no tokenizer.json (a fast tokenizer is required)")
    tok = Tokenizer.from_file(str(file))
    tok.no_truncation()  # tokenizer.json files often carry a training-time 128
    tok.no_padding()
    return tok


def _max_length(path: Path, cfg: dict[str, Any], model_type: str) -> int:
    st = path / "sentence_bert_config.json"
    if st.is_file() and isinstance(_read_json(st).get("max_seq_length"), int):
        return int(_read_json(st)["max_seq_length"])
    text = cfg.get("text_config", cfg)
    for key in ("max_position_embeddings", "max_seq_len", "n_positions", "seq_length"):
        if isinstance(text.get(key), int):
            return int(text[key]) - _POSITION_OFFSET.get(model_type, 0)
    return 512


def _matryoshka(cfg: dict[str, Any]) -> tuple[int, ...] | None:
    dims = cfg.get("matryoshka_dimensions")
    if isinstance(dims, list):
        return tuple(int(d) for d in dims)
    return () if cfg.get("is_matryoshka") else None


def _vocab_size(cfg: dict[str, Any], tok: Any) -> int:
    size = cfg.get("text_config", cfg).get("vocab_size")
    return int(size) if isinstance(size, int) else int(tok.get_vocab_size(with_added_tokens=True))


def _pad_id(tok: Any) -> int:
    for name in ("[PAD]", "<pad>", "<|endoftext|>"):
        if (i := tok.token_to_id(name)) is not None:
            return int(i)
    return 0


def _dtype(module: nn.Module) -> str:
    from mlx.utils import tree_flatten

    for name, p in tree_flatten(module.parameters()):
        if name.endswith("weight") and p.dtype in _DTYPES.values():
            return str(p.dtype).replace("mlx.core.", "")
    return "quantized"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return data
