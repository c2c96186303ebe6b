"""How token states become one vector: the model's own sentence-transformers config, or a flag.

sentence-transformers folders name their pooling in `modules.json` -> `<Pooling>/config.json`,
either as `pooling_mode` (current) or as `pooling_mode_*` booleans (older releases).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import mlx.core as mx

Pooling = Literal["mean", "cls", "last", "max", "mean_sqrt_len"]
POOLINGS: tuple[str, ...] = ("mean", "cls", "last", "max", "mean_sqrt_len")

# sentence-transformers' mode names -> ours (llama-server's where it has one).
_ST_MODES = {"mean": "mean", "cls": "cls", "lasttoken": "last", "max": "max",
             "mean_sqrt_len_tokens": "mean_sqrt_len"}
_ST_LEGACY = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
              "pooling_mode_lasttoken": "lasttoken", "pooling_mode_max_tokens": "max",
              "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
              "pooling_mode_weightedmean_tokens": "weightedmean"}


class PoolingConfigError(ValueError):
    """The model asks for a pooling this server does not implement."""


def _read_json(path: Path) -> object:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _pooling_dir(folder: Path) -> Path | None:
    modules = folder / "modules.json"
    if modules.is_file():
        for module in _read_json(modules):  # type: ignore[union-attr]
            if str(module.get("type", "")).endswith(".Pooling"):
                return folder / module.get("path", "")
    legacy = folder / "1_Pooling"
    return legacy if legacy.is_dir() else None


def model_pooling(folder: Path) -> Pooling | None:
    """The pooling the model's sentence-transformers config names, or None if it has none."""
    pdir = _pooling_dir(folder)
    if pdir is None or not (pdir / "config.json").is_file():
        return None
    cfg = _read_json(pdir / "config.json")
    assert isinstance(cfg, dict)
    modes = cfg.get("pooling_mode")
    if modes is None:
        modes = [_ST_LEGACY[k] for k, on in cfg.items() if k in _ST_LEGACY and on]
    modes = [modes] if isinstance(modes, str) else list(modes)
    if len(modes) != 1 or modes[0] not in _ST_MODES:
        raise PoolingConfigError(f"{pdir / 'config.json'}: pooling {modes} is not supported "
                                 f"(supported: one of {sorted(_ST_MODES)}); pass --pooling")
    return _ST_MODES[modes[0]]  # type: ignore[return-value]


def pool(hidden: mx.array, mask: mx.array, lengths: mx.array, how: Pooling) -> mx.array:
    """(batch, seq, dim) states of right-padded rows -> (batch, dim), float32."""
    hidden = hidden.astype(mx.float32)
    if how == "cls":
        return hidden[:, 0]
    if how == "last":
        return mx.take_along_axis(hidden, (lengths - 1)[:, None, None], axis=1)[:, 0]
    m = mask[:, :, None].astype(mx.float32)
    if how == "max":
        return mx.max(mx.where(m > 0, hidden, -mx.inf), axis=1)
    summed = mx.sum(hidden * m, axis=1)
    n = mx.maximum(lengths.astype(mx.float32), 1.0)[:, None]
    return summed / (mx.sqrt(n) if how == "mean_sqrt_len" else n)


def normalize(x: mx.array) -> mx.array:
    return x / mx.maximum(mx.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
