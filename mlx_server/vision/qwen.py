"""Qwen2.5-VL and Qwen3-VL: images in the prompt with M-RoPE's 3-D positions.

These models give an image's tokens (t, h, w) positions, so after an image the text
positions run behind the token index by a per-sequence amount (mlx-vlm's `rope_deltas`).
The prompt through its last image is read here by mlx-vlm's own language model (its M-RoPE
attention, and Qwen3-VL's deepstack features added to the first layers) with positions from
its `get_rope_index`; its decoder layers are the engine's mlx-lm layers, shared, not copied.
Everything after that is read and decoded by the engine's mlx-lm text model inside the
batch, where M-RoPE with equal (t, h, w) positions is ordinary RoPE: only the position has
to move. The sequence's caches carry that delta (`with_delta`) and add it, when merged
into the batch, to `BatchKVCache.offset`, which mlx-lm's attention uses only as the RoPE
position; writes and masks go by the batch's own index. Extracted caches lose it again, so
the prefix cache keeps position-free token-keyed entries and each admission re-applies it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx import nn
from mlx_lm.models.cache import KVCache

from ..engine.types import InvalidRequestError, ModelLoadError, PromptImage
from .model import FeatureCache, _config, _image_processor, _key_ids, _load_vlm, own_arrays

ARCHS = ("qwen2_5_vl", "qwen3_vl")


@dataclass(frozen=True)
class QwenPixels:
    """One image as the processor made it: flattened patches and its (t, h, w) patch grid."""

    values: np.ndarray
    grid: tuple[int, int, int]


class _RopeDelta:
    """Mixin for a sequence's KV cache: its next RoPE position is its length + `rope_delta`."""

    rope_delta = 0

    def merge(self, caches: list[Any]) -> Any:
        # mlx-lm batches caches through the first one's `merge`; the engine hands every
        # sequence of a Qwen-VL model one of these, so each row gets its own delta.
        batch = super().merge(caches)  # type: ignore[misc]
        batch.offset = batch.offset + mx.array([getattr(c, "rope_delta", 0) for c in caches])
        return batch


_WITH_DELTA: dict[type, type] = {}


def with_delta(cache: list[Any], delta: int) -> list[Any]:
    """Copies of a sequence's layer caches (sharing their arrays) that carry `delta`; any
    KVCache kind (the -ctk/-ctv formats included) keeps its own merge underneath."""
    out = []
    for c in cache:
        base = getattr(type(c), "_rope_base", type(c))
        if not issubclass(base, KVCache):
            raise ModelLoadError(f"Qwen-VL needs full-attention KV caches, not {base.__name__}")
        cls = _WITH_DELTA.setdefault(base, type(f"RopeDelta{base.__name__}", (_RopeDelta, base),
                                                {"_rope_base": base}))
        d = cls.__new__(cls)
        d.__dict__.update(c.__dict__)
        d.rope_delta = delta
        out.append(d)
    return out


class QwenVisionModel:
    """Encodes images for a Qwen2.5-VL / Qwen3-VL folder and prefills the image part."""

    def __init__(self, path: Path, text_model: nn.Module, tokenizer: Any, cache_size: int = 32):
        cfg = _config(path)
        self.vlm = _load_sharing_layers(path, text_model)
        self.processor = _image_processor(path)
        self.image_token_id = int(cfg["image_token_id"])
        self.placeholder_id = self.image_token_id  # the template emits one per image
        self.vision_start_id = int(cfg["vision_start_token_id"])
        self.merge = int(cfg["vision_config"].get("spatial_merge_size", 2))
        text = cfg.get("text_config", cfg)
        self.vocab_size = int(text.get("vocab_size") or cfg["vocab_size"])
        self.tokens_per_image = 0  # varies with the image's size
        self.counters = {"images_encoded": 0, "image_cache_hits": 0, "image_tokens_prefilled": 0}
        self._features = FeatureCache(cache_size, self.counters)  # (rows, deepstack rows)

    # -- request side (a worker thread): numpy and PIL only -------------------
    def prepare(self, tokens: Sequence[int], images: Sequence[tuple[bytes, str]]
                ) -> tuple[list[int], tuple[PromptImage, ...]]:
        """Replace each <|image_pad|> the template emitted by one token per merged patch
        (ids derived from the image's digest, so the prefix cache tells images apart)."""
        at = [i for i, t in enumerate(tokens) if t == self.placeholder_id]
        if len(at) != len(images):
            raise InvalidRequestError(
                f"The chat template placed {len(at)} images but the messages carry "
                f"{len(images)}.", "messages")
        if any(p == 0 or tokens[p - 1] != self.vision_start_id for p in at):
            raise InvalidRequestError("The chat template must put <|vision_start|> before "
                                      "each image.", "messages")
        out: list[int] = []
        spans = []
        prev = 0
        for pos, (data, digest) in zip(at, images):
            out += tokens[prev:pos]
            pixels = self._pixels(data)
            t, h, w = pixels.grid
            n = t * h * w // (self.merge * self.merge)
            spans.append(PromptImage(len(out), n, digest, pixels))
            out += _key_ids(digest, n, self.vocab_size)
            prev = pos + 1
        return out + list(tokens[prev:]), tuple(spans)

    def _pixels(self, data: bytes) -> QwenPixels:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
        out = self.processor(images=[rgb], return_tensors="np")
        t, h, w = (int(x) for x in np.asarray(out["image_grid_thw"])[0])
        return QwenPixels(np.asarray(out["pixel_values"], dtype=np.float32), (t, h, w))

    # -- engine thread --------------------------------------------------------
    def features(self, image: PromptImage) -> tuple[mx.array, list[mx.array] | None]:
        """The image's rows of the prompt embeddings, and Qwen3-VL's per-layer deepstack rows."""
        hit = self._features.get(image.digest)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        tower = self.vlm.vision_tower
        pixels = mx.array(image.pixels.values).astype(tower.patch_embed.proj.weight.dtype)
        out = tower(pixels, mx.array([image.pixels.grid]))
        rows, deep = (out[0], list(out[1])) if isinstance(out, tuple) else (out, None)
        if rows.shape[0] != image.length:
            raise InvalidRequestError(f"The image gave {rows.shape[0]} features for "
                                      f"{image.length} tokens.", "messages")
        mx.eval(rows, deep)
        self._features.put(image.digest, (rows, deep))
        return rows, deep

    def prefill(self, model: nn.Module, prompt: Sequence[int], images: Sequence[PromptImage],
                cache: Any, reused: int, step: int = 512) -> tuple[Any, int]:
        """Extend (cache, reused) through the last image with 3-D positions; return caches
        that carry the sequence's position delta (0 without images) for the batch."""
        from mlx_lm.models.cache import make_prompt_cache

        if cache is None:
            cache, reused = make_prompt_cache(model), 0
        if not images:
            return with_delta(cache, 0), reused
        end = max(im.start + im.length for im in images)
        ids = list(prompt[:end])
        for im in images:  # mlx-vlm finds images by their token
            ids[im.start:im.start + im.length] = [self.image_token_id] * im.length
        grid = mx.array([im.pixels.grid for im in images])
        positions, deltas = self.vlm.language_model.get_rope_index(mx.array(ids)[None], grid)
        if reused < end:
            self._read(ids, images, own_arrays(cache), reused, positions, step)
            self.counters["image_tokens_prefilled"] += sum(im.length for im in images)
        return with_delta(cache, int(deltas.reshape(-1)[0].item())), max(reused, end)

    def _read(self, ids: list[int], images: Sequence[PromptImage], cache: list[Any],
              start: int, positions: mx.array, step: int) -> None:
        lm = self.vlm.language_model.model
        emb = lm.embed_tokens(mx.array(ids))
        is_image = np.zeros(len(ids), dtype=bool)
        deep: list[list[tuple[int, mx.array]]] = []  # per layer: (image start, its rows)
        for im in images:
            rows, layers = self.features(im)
            emb[im.start:im.start + im.length] = rows.astype(emb.dtype)
            is_image[im.start:im.start + im.length] = True
            for i, r in enumerate(layers or []):
                if i == len(deep):
                    deep.append([])
                deep[i].append((im.start, r))
        tokens = mx.array(ids)
        for s in range(start, len(ids), step):
            e = min(len(ids), s + step)
            extra = {}
            if deep and is_image[s:e].any():
                extra = {"visual_pos_masks": mx.array(is_image[s:e])[None],
                         "deepstack_visual_embeds": [_rows_in(layer, s, e) for layer in deep]}
            lm(tokens[s:e][None], inputs_embeds=emb[s:e][None], cache=cache,
               position_ids=positions[:, :, s:e], **extra)
            mx.eval([c.state for c in cache])


def _rows_in(images: list[tuple[int, mx.array]], s: int, e: int) -> mx.array:
    """The deepstack rows of the image tokens that fall in prompt[s:e], in order."""
    parts = [r[max(0, s - at):max(0, min(e - at, r.shape[0]))] for at, r in images]
    return mx.concatenate([p for p in parts if p.shape[0]], axis=0)


def _load_sharing_layers(path: Path, text_model: nn.Module) -> nn.Module:
    """mlx-vlm's model whose language layers are the engine's mlx-lm modules (same weight
    names), so only the vision tower and M-RoPE are its own; the rest is never read."""
    vlm = _load_vlm(path)
    mine, theirs = vlm.language_model.model, text_model.language_model.model
    mine.embed_tokens, mine.norm = theirs.embed_tokens, theirs.norm
    try:
        for a, b in zip(mine.layers, theirs.layers, strict=True):
            for parent, other in ((a, b), (a.self_attn, b.self_attn)):
                for name, child in parent.children().items():
                    if isinstance(child, nn.Module) and name not in ("self_attn", "rotary_emb"):
                        setattr(parent, name, other[name])
    except (KeyError, ValueError) as e:
        raise ModelLoadError(f"{path}: mlx-lm's and mlx-vlm's language models differ: {e}"
                             ) from e
    if "lm_head" in vlm.language_model:
        del vlm.language_model["lm_head"]  # the engine's text model makes the logits
    mx.eval(vlm.parameters())
    return vlm
