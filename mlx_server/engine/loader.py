"""Loading an MLX model folder into memory, with the dtype and template the config asks for."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx import nn
from mlx_lm.utils import load as mlx_load

from . import (
    cpu_blocked,
    cpu_head,
    cpu_ops,
    gelu_gate,
    norm_scale,
    panel_head,
    proj_fuse,
)

log = logging.getLogger("mlx_server.engine")

_DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}


@dataclass
class LoadedModel:
    """A model and tokenizer ready to serve."""

    model: nn.Module
    tokenizer: Any  # mlx_lm TokenizerWrapper
    path: Path
    ctx_size: int
    vocab_size: int
    dtype: str
    eos_ids: tuple[int, ...]
    vision: Any = None  # mlx_server.vision.VisionModel for a vision-language model
    sync_forward: bool = False  # a decode forward ends in a host sync (cpu_head.py)


def _config(path: Path) -> dict[str, Any]:
    with open(path / "config.json", encoding="utf-8") as f:
        return json.load(f)


def _context_length(cfg: dict[str, Any]) -> int:
    text = cfg.get("text_config", cfg)
    for key in ("max_position_embeddings", "max_seq_len", "n_positions", "seq_length"):
        if isinstance(text.get(key), int):
            return int(text[key])
    return 4096


def _weights_dtype(model: nn.Module) -> str:
    from mlx.utils import tree_flatten

    for name, p in tree_flatten(model.parameters()):
        if name.endswith("weight") and p.dtype in (mx.float32, mx.bfloat16, mx.float16):
            return str(p.dtype).replace("mlx.core.", "")
    return "quantized"


def load_model(
    path: Path,
    dtype: str = "auto",
    chat_template: str | None = None,
    ctx_size: int | None = None,
    load: Callable[[str], tuple[nn.Module, Any]] = mlx_load,
) -> LoadedModel:
    """Load `path` with mlx-lm; cast to `dtype` unless it is "auto" or the model is quantized.

    `load` reads the folder (mlx-lm's `load`; a distributed run passes `sharded_load`).
    """
    t0 = time.perf_counter()
    model, tokenizer = load(str(path))
    if dtype != "auto" and _weights_dtype(model) != "quantized":
        model.set_dtype(_DTYPES[dtype])
    mx.eval(model.parameters())
    # the output projection on CPU: panels through a native kernel, else BLAS (host sync)
    sync_forward = panel_head.install(model) or cpu_head.install(model)
    cpu_blocked.install(model)  # few-row linears: blocked sgemms on two streams (CPU only)
    cpu_ops.install(model)  # gelu, attention softmax, logsumexp: numpy's SIMD loops (CPU only)
    norm_scale.install(model)  # Gemma's (1 + weight) norm scales: once, not every step
    gelu_gate.install(model)  # Gemma's gelu(gate) * up: one kernel (not on CPU)
    proj_fuse.install(model)  # q/k/v and gate/up: one matmul per group (not on CPU)
    if chat_template is not None:
        tokenizer._tokenizer.chat_template = chat_template
        tokenizer.has_chat_template = True
    cfg = _config(path)
    native_ctx = _context_length(cfg)
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        path=path,
        ctx_size=min(ctx_size, native_ctx) if ctx_size else native_ctx,
        vocab_size=_vocab_size(model, tokenizer),
        dtype=_weights_dtype(model),
        eos_ids=tuple(sorted(tokenizer.eos_token_ids)),
        sync_forward=sync_forward,
    )
    if "vision_config" in cfg:
        from ..vision.model import load_vision

        loaded.vision = load_vision(path, model, tokenizer)
    if ctx_size and ctx_size > native_ctx:
        log.warning("--ctx-size %d exceeds the model's %d; using %d", ctx_size, native_ctx, native_ctx)
    log.info(
        "loaded %s in %.1fs: dtype=%s ctx=%d vocab=%d eos=%s",
        path, time.perf_counter() - t0, loaded.dtype, loaded.ctx_size, loaded.vocab_size,
        list(loaded.eos_ids),
    )
    return loaded


def _vocab_size(model: nn.Module, tokenizer: Any) -> int:
    args = getattr(model, "args", None)
    size = getattr(args, "vocab_size", None)
    return int(size) if size else len(tokenizer._tokenizer)
