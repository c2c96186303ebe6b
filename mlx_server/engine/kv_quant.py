"""KV-cache storage types (llama.cpp's `-ctk`/`-ctv`) inside mlx-lm's batched caches.

mlx-lm 0.32 quantizes the KV cache of a single sequence only (`QuantizedKVCache`); its
batched caches (`BatchKVCache`, `BatchRotatingKVCache`) hold plain arrays. The caches
here subclass those and change one thing: what is stored. Float types are a cast. A
quantized K (or V) is `mx.quantize`'s (data, scales, biases), packed side by side along
the last axis into one uint16 array, so every piece of mlx-lm's batch bookkeeping
(left padding, rolling, rotation of sliding windows, merge/extend/filter/extract, trim)
applies unchanged to one array per tensor. `update_and_fetch` unpacks views of the three
parts and the cache carries `bits`/`group_size`, so mlx-lm's `scaled_dot_product_attention`
takes its quantized path (`mx.quantized_matmul` on the packed codes, nothing dequantized).

Quantization is per token and per group of 32 channels (llama.cpp's block size), so a
sequence's cache does not depend on what else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx import nn
from mlx_lm.models.cache import (
    BatchKVCache,
    BatchRotatingKVCache,
    KVCache,
    RotatingKVCache,
    make_prompt_cache,
)

FLOAT_TYPES = {"f32": mx.float32, "f16": mx.float16, "bf16": mx.bfloat16}
# llama.cpp's quantized types -> MLX bits. MLX quantization is affine (a scale and a bias
# per group), which is what q4_1/q5_1 are; q4_0/q5_0 (scale only) get the same format, and
# iq4_nl's non-linear codebook has no MLX counterpart, so it becomes 4-bit affine too.
QUANT_BITS = {"q8_0": 8, "q4_0": 4, "q4_1": 4, "iq4_nl": 4, "q5_0": 5, "q5_1": 5}
GROUP_SIZE = 32  # llama.cpp's quantization block; MLX supports 32, 64 and 128
CACHE_TYPES = (*FLOAT_TYPES, *QUANT_BITS)
_DTYPE_NAMES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


@dataclass(frozen=True)
class KVCacheFormat:
    """How K and V are stored. `None` types keep the model's dtype (mlx-lm's own caches)."""

    type_k: str | None = None
    type_v: str | None = None

    @classmethod
    def parse(cls, type_k: str | None, type_v: str | None) -> KVCacheFormat:
        """Validate a `-ctk`/`-ctv` pair; ValueError says what to pass instead."""
        for flag, t in (("--cache-type-k", type_k), ("--cache-type-v", type_v)):
            if t is not None and t not in CACHE_TYPES:
                raise ValueError(f"{flag} {t}: unknown KV-cache type; one of "
                                 + ", ".join(CACHE_TYPES))
        bits_k, bits_v = QUANT_BITS.get(type_k or ""), QUANT_BITS.get(type_v or "")
        if (bits_k or bits_v) and bits_k != bits_v:
            # mlx-lm's quantized attention reads K and V with one bits/group_size pair.
            raise ValueError(
                f"--cache-type-k {type_k or 'default'} --cache-type-v {type_v or 'default'}: "
                "a quantized KV cache needs K and V quantized alike on MLX; pass the same "
                f"type for both (e.g. -ctk {type_k or type_v} -ctv {type_k or type_v})")
        return cls(type_k, type_v)

    @property
    def bits(self) -> int | None:
        return QUANT_BITS.get(self.type_k or "")

    @property
    def is_default(self) -> bool:
        return self.type_k is None and self.type_v is None

    def names(self, model_dtype: str) -> tuple[str, str]:
        """The effective (K, V) type names; the model's dtype ("float32", ...) where none
        was asked for."""
        default = _DTYPE_NAMES.get(model_dtype, model_dtype)
        return self.type_k or default, self.type_v or default

    def describe(self) -> str:
        if self.bits:
            return (f"K {self.type_k}, V {self.type_v}: {self.bits}-bit affine, "
                    f"group {GROUP_SIZE} (MLX)")
        return f"K {self.type_k or 'model dtype'}, V {self.type_v or 'model dtype'}"

    def make_cache(self, model: nn.Module) -> list[Any]:
        """A fresh per-sequence cache for `model` in this format."""
        caches = make_prompt_cache(model)
        if self.is_default:
            return caches
        return [self._wrap(c) for c in caches]

    def _wrap(self, c: Any) -> Any:
        if type(c) is KVCache:
            return FormattedKVCache(self)
        if type(c) is RotatingKVCache:
            return FormattedRotatingKVCache(self, c.max_size, c.keep)
        return c  # other layer kinds (linear-attention state, ...) keep mlx-lm's cache

    # -- what is stored, what attention reads ------------------------------------
    def encode(self, x: mx.array, which: str) -> mx.array:
        if self.bits:
            return _pack(_quantize(x, self.bits))
        dtype = FLOAT_TYPES.get((self.type_k if which == "k" else self.type_v) or "")
        return x.astype(dtype) if dtype is not None and x.dtype != dtype else x

    def decode(self, stored: mx.array, like: mx.array) -> Any:
        return _unpack(stored, like, self.bits) if self.bits else stored


def _quantize(x: mx.array, bits: int) -> tuple[mx.array, mx.array, mx.array]:
    if x.shape[-1] % GROUP_SIZE:
        raise ValueError(f"a quantized KV cache needs head dimensions that are multiples of "
                         f"{GROUP_SIZE} (the group size); this model's is {x.shape[-1]}")
    w, s, b = mx.quantize(x, group_size=GROUP_SIZE, bits=bits)
    return w, s, b


def _pack(parts: tuple[mx.array, ...]) -> mx.array:
    return mx.concatenate([mx.view(p, mx.uint16) for p in parts], axis=-1)


def _unpack(packed: mx.array, like: mx.array, bits: int) -> tuple[mx.array, mx.array, mx.array]:
    """Views of (codes, scales, biases); `like` (what was quantized) gives the widths."""
    d = like.shape[-1]
    n_codes = d * bits // 16
    n_scales = d // GROUP_SIZE * like.dtype.size // 2
    return (mx.view(packed[..., :n_codes], mx.uint32),
            mx.view(packed[..., n_codes:n_codes + n_scales], like.dtype),
            mx.view(packed[..., n_codes + n_scales:], like.dtype))


class _Formatted:
    """Mixin: encode what the model writes, decode what attention reads."""

    fmt: KVCacheFormat

    def _adopt(self, fmt: KVCacheFormat) -> None:
        self.fmt = fmt
        if fmt.bits:  # mlx-lm's attention takes the quantized path when these exist
            self.bits, self.group_size = fmt.bits, GROUP_SIZE

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[Any, Any]:
        k, v = super().update_and_fetch(  # type: ignore[misc]
            self.fmt.encode(keys, "k"), self.fmt.encode(values, "v"))
        return self.fmt.decode(k, keys), self.fmt.decode(v, values)


def _rebrand(cache: Any, cls: type, fmt: KVCacheFormat) -> Any:
    """mlx-lm builds plain caches in extract/merge; carry their state over into ours."""
    out = cls.__new__(cls)
    out.__dict__.update(cache.__dict__)
    out._adopt(fmt)
    return out


class FormattedKVCache(_Formatted, KVCache):
    """One sequence's full-attention cache in a `KVCacheFormat` (the prefix cache keeps these)."""

    def __init__(self, fmt: KVCacheFormat):
        KVCache.__init__(self)
        self._adopt(fmt)

    @classmethod
    def merge(cls, caches: list[Any]) -> BatchFormattedKVCache:
        return BatchFormattedKVCache.merge(caches)


class FormattedRotatingKVCache(_Formatted, RotatingKVCache):
    """One sequence's sliding-window cache in a `KVCacheFormat`."""

    def __init__(self, fmt: KVCacheFormat, max_size: int, keep: int = 0):
        RotatingKVCache.__init__(self, max_size, keep)
        self._adopt(fmt)

    @classmethod
    def merge(cls, caches: list[Any]) -> BatchFormattedRotatingKVCache:
        return BatchFormattedRotatingKVCache.merge(caches)


class BatchFormattedKVCache(_Formatted, BatchKVCache):
    """`BatchKVCache` storing a `KVCacheFormat`; extracts `FormattedKVCache`s."""

    @classmethod
    def merge(cls, caches: list[Any]) -> BatchFormattedKVCache:
        out = super().merge(caches)
        if not isinstance(out, cls):  # mlx-lm returns a plain BatchKVCache when all are empty
            out = cls([0] * len(caches))
        out._adopt(caches[0].fmt)
        return out

    def extract(self, idx: int) -> FormattedKVCache:
        return _rebrand(super().extract(idx), FormattedKVCache, self.fmt)


class BatchFormattedRotatingKVCache(_Formatted, BatchRotatingKVCache):
    """`BatchRotatingKVCache` storing a `KVCacheFormat`; extracts `FormattedRotatingKVCache`s."""

    @classmethod
    def merge(cls, caches: list[Any]) -> BatchFormattedRotatingKVCache:
        out = super().merge(caches)
        out._adopt(caches[0].fmt)
        return out

    def extract(self, idx: int) -> FormattedRotatingKVCache:
        return _rebrand(super().extract(idx), FormattedRotatingKVCache, self.fmt)
