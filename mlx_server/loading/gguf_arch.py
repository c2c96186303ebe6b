"""Per-architecture knowledge: GGUF metadata -> HF/mlx-lm config, and GGUF tensor names -> mlx-lm's.

Each architecture is one `ArchSpec`; supporting another means adding one config builder
and, if its tensors differ, a few name pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import GGUFImportError
from .gguf_file import GGUFFile

_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Gemma 3 norms around both sub-blocks; its `ffn_norm` is the pre-FFN norm.
_GEMMA3_BLOCK_NAMES = {
    **_BLOCK_NAMES,
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
# Tensors llama.cpp writes that carry config, not weights.
CONFIG_ONLY_TENSORS = frozenset({"rope_freqs.weight"})


class Meta:
    """Typed access to `{arch}.*` metadata with clear errors for missing keys."""

    def __init__(self, gguf: GGUFFile) -> None:
        self.gguf = gguf
        self.arch = gguf.architecture

    def get(self, key: str, default: Any = None) -> Any:
        return self.gguf.metadata.get(f"{self.arch}.{key}", default)

    def require(self, key: str) -> Any:
        value = self.uniform(key)
        if value is None:
            raise GGUFImportError(f"{self.gguf.path}: metadata key {self.arch}.{key} is missing")
        return value

    def uniform(self, key: str, default: Any = None) -> Any:
        """A per-model value that some files store per layer; refuse layers that differ."""
        value = self.get(key, default)
        if isinstance(value, (list, np.ndarray)):
            values = np.asarray(value).tolist()
            if len(set(values)) != 1:
                raise GGUFImportError(f"{self.gguf.path}: per-layer {key} values differ: {values}")
            return values[0]
        return value


@dataclass(frozen=True)
class ArchSpec:
    """How one GGUF architecture maps onto one mlx-lm model type."""

    model_type: str
    hf_architecture: str
    build_config: Callable[[Meta], dict[str, Any]]
    block_names: dict[str, str]
    # llama.cpp interleaves q/k rows for its rope kernel on llama models only.
    permute_qk: bool = False
    # llama.cpp stores Gemma norms as (1 + w); mlx-lm adds the 1 itself.
    norm_shift: float = 0.0


def _common_config(m: Meta) -> dict[str, Any]:
    embed = m.gguf.tensors.get("token_embd.weight")
    if embed is None:
        raise GGUFImportError(f"{m.gguf.path}: tensor token_embd.weight is missing")
    heads = int(m.require("attention.head_count"))
    hidden = int(m.require("embedding_length"))
    return {
        "hidden_size": hidden,
        "num_hidden_layers": int(m.require("block_count")),
        "intermediate_size": int(m.require("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(m.uniform("attention.head_count_kv", heads)),
        "head_dim": int(m.get("attention.key_length", hidden // heads)),
        "rms_norm_eps": float(m.require("attention.layer_norm_rms_epsilon")),
        "vocab_size": int(embed.shape[0]),
        "max_position_embeddings": int(m.get("context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in m.gguf.tensors,
    }


def _linear_rope_scaling(m: Meta) -> dict[str, Any] | None:
    kind, factor = m.get("rope.scaling.type"), m.get("rope.scaling.factor")
    if kind in (None, "none") or not factor or float(factor) == 1.0:
        return None
    if kind != "linear":
        raise GGUFImportError(f"{m.gguf.path}: rope scaling {kind!r} is not supported yet")
    return {"rope_type": "linear", "factor": float(factor)}


def _llama_config(m: Meta) -> dict[str, Any]:
    cfg = _common_config(m)
    cfg["rope_theta"] = float(m.get("rope.freq_base", 10000.0))
    cfg["attention_bias"] = "blk.0.attn_q.bias" in m.gguf.tensors
    cfg["mlp_bias"] = False
    cfg["rope_scaling"] = _llama3_rope_scaling(m, cfg) or _linear_rope_scaling(m)
    return cfg


def _qwen2_config(m: Meta) -> dict[str, Any]:
    cfg = _common_config(m)
    if cfg["head_dim"] * cfg["num_attention_heads"] != cfg["hidden_size"]:
        raise GGUFImportError(f"{m.gguf.path}: qwen2 needs head_dim * heads == hidden size")
    cfg["rope_theta"] = float(m.get("rope.freq_base", 1_000_000.0))
    cfg["rope_scaling"] = _linear_rope_scaling(m)
    return cfg


def _qwen3_config(m: Meta) -> dict[str, Any]:
    cfg = _common_config(m)
    cfg["rope_theta"] = float(m.get("rope.freq_base", 1_000_000.0))
    cfg["rope_scaling"] = _linear_rope_scaling(m)
    return cfg


def _gemma3_config(m: Meta) -> dict[str, Any]:
    cfg = _common_config(m)
    layers, head_dim = cfg["num_hidden_layers"], cfg["head_dim"]
    pattern = _sliding_window_pattern(m, layers)
    # llama.cpp's rule: the 27B (62 layers) scales queries by hidden/heads, the rest by head_dim.
    scalar = cfg["hidden_size"] // cfg["num_attention_heads"] if layers == 62 else head_dim
    cfg.update(
        rope_theta=float(m.get("rope.freq_base", 1_000_000.0)),
        # llama.cpp hard-codes 10k for the local layers unless the file says otherwise.
        rope_local_base_freq=float(m.get("rope.freq_base_swa", 10_000.0)),
        rope_scaling=_linear_rope_scaling(m),
        query_pre_attn_scalar=scalar,
        sliding_window=int(m.get("attention.sliding_window", 512)),
        sliding_window_pattern=pattern,
        layer_types=[
            "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
            for i in range(layers)
        ],
        hidden_activation="gelu_pytorch_tanh",
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
    )
    return cfg


def _sliding_window_pattern(m: Meta, layers: int) -> int:
    """mlx-lm wants a period N (every Nth layer global); newer files list a bool per layer."""
    raw = m.get("attention.sliding_window_pattern")
    if raw is None:
        return 6
    if isinstance(raw, (int, np.integer)):
        return int(raw)
    sliding = [bool(x) for x in np.asarray(raw).tolist()]
    for period in range(1, layers + 1):
        if sliding == [(i + 1) % period != 0 for i in range(layers)]:
            return period
    raise GGUFImportError(f"{m.gguf.path}: sliding-window layer pattern {sliding} is not periodic")


def _llama3_rope_scaling(m: Meta, cfg: dict[str, Any]) -> dict[str, Any] | None:
    """Llama 3.1+ stores its rope scaling only as a `rope_freqs` tensor; recover the parameters."""
    info = m.gguf.tensors.get("rope_freqs.weight")
    if info is None:
        return None
    from gguf.quants import dequantize

    found = dequantize(m.gguf.tensor_bytes(info), info.qtype).astype(np.float64).ravel()
    factor = float(found.max())
    for original in (8192, 4096, 2048, 16384, 32768, 65536):
        for low, high in ((1.0, 4.0), (1.0, 2.0), (1.0, 8.0)):
            want = _llama3_rope_factors(cfg, factor, low, high, original)
            if want.shape == found.shape and np.allclose(want, found, rtol=1e-4, atol=1e-4):
                return {
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low,
                    "high_freq_factor": high,
                    "original_max_position_embeddings": original,
                }
    raise GGUFImportError(f"{m.gguf.path}: rope_freqs does not match any llama3 rope scaling")


def _llama3_rope_factors(
    cfg: dict[str, Any], factor: float, low: float, high: float, original: int
) -> np.ndarray:
    # Mirrors llama.cpp's convert_hf_to_gguf.py LlamaModel.generate_extra_tensors.
    dim = cfg["head_dim"]
    freqs = 1.0 / (cfg["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    wavelen = 2 * math.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    mid = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < original / high, 1.0, np.where(wavelen > original / low, factor, mid))


ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec("llama", "LlamaForCausalLM", _llama_config, _BLOCK_NAMES, permute_qk=True),
    "qwen2": ArchSpec("qwen2", "Qwen2ForCausalLM", _qwen2_config, _BLOCK_NAMES),
    "qwen3": ArchSpec("qwen3", "Qwen3ForCausalLM", _qwen3_config, _BLOCK_NAMES),
    "gemma3": ArchSpec(
        "gemma3_text", "Gemma3ForCausalLM", _gemma3_config, _GEMMA3_BLOCK_NAMES, norm_shift=1.0
    ),
}


def arch_spec(gguf: GGUFFile) -> ArchSpec:
    """The spec for this file's architecture, or a `GGUFImportError` naming the supported ones."""
    arch = gguf.architecture
    if arch not in ARCHITECTURES:
        raise GGUFImportError(
            f"{gguf.path}: unsupported architecture {arch or '(none)'!r}; "
            f"supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[arch]


def mlx_name(spec: ArchSpec, gguf_name: str) -> str:
    """mlx-lm's parameter name for a GGUF tensor name."""
    stem, _, kind = gguf_name.rpartition(".")
    if stem in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[stem]}.{kind}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in spec.block_names:
        return f"model.layers.{parts[1]}.{spec.block_names[parts[2]]}.{kind}"
    raise GGUFImportError(f"tensor {gguf_name!r} has no place in a {spec.model_type} model")
