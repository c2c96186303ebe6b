"""A vision-language model's vision half: images become rows of the prompt's embeddings.

The text half stays the engine's mlx-lm model (mlx-lm loads a Gemma 3 VLM folder's language
model), so decoding keeps continuous batching and the prefix cache. Only the part of a
prompt up to its last image is prefilled here: mlx-vlm's classes encode each image (its
`get_input_embeddings`, vision tower and projector), and the text model reads the merged
embeddings into a KV cache that the engine then continues from.

Image tokens get ids derived from the image's SHA-256 in the prompt the engine sees, so the
prefix cache tells two images apart and a repeated image (a multi-turn chat) is a cache hit;
image features are also kept in an LRU by the same digest.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlx.core as mx
import numpy as np
from mlx import nn

from ..engine.types import InvalidRequestError, ModelLoadError, PromptImage

if TYPE_CHECKING:
    from .qwen import QwenVisionModel

log = logging.getLogger("mlx_server.vision")


@dataclass(frozen=True)
class _Arch:
    """How one architecture marks images: the token its chat template emits per image, and
    the text its processor replaces that token with ({image} stands for the image tokens)."""

    placeholder_key: str  # config key of the placeholder token's id
    expansion: str  # with {boi}, {eoi} and {image}


# Architectures whose text half mlx-lm loads and whose vision half mlx-vlm has.
ARCHS = {
    "gemma3": _Arch("boi_token_index", "\n\n{boi}{image}{eoi}\n\n"),
}


def is_vision_model(path: Path) -> bool:
    from .qwen import ARCHS as QWEN_ARCHS

    cfg = _config(path)
    return "vision_config" in cfg and cfg.get("model_type") in (*ARCHS, *QWEN_ARCHS)


class FeatureCache:
    """Encoded images by SHA-256, least recently used dropped first (any thread)."""

    def __init__(self, size: int, counters: dict[str, int]):
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        self._counters = counters

    def get(self, digest: str) -> Any:
        with self._lock:
            hit = self._items.get(digest)
            if hit is not None:
                self._items.move_to_end(digest)
                self._counters["image_cache_hits"] += 1
            return hit

    def put(self, digest: str, value: Any) -> None:
        with self._lock:
            self._counters["images_encoded"] += 1
            self._items[digest] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class VisionModel:
    """Encodes images for one VLM and prefills the image part of prompts."""

    def __init__(self, path: Path, text_model: nn.Module, tokenizer: Any, cache_size: int = 32):
        cfg = _config(path)
        arch = ARCHS[cfg["model_type"]]
        self.vlm = _load_vision_half(path, text_model)
        self.processor = _image_processor(path)
        self.image_token_id = int(cfg["image_token_index"])
        self.tokens_per_image = int(cfg.get("mm_tokens_per_image")
                                    or cfg["text_config"]["mm_tokens_per_image"])
        self.placeholder_id = int(cfg[arch.placeholder_key])
        vocab = tokenizer._tokenizer if hasattr(tokenizer, "_tokenizer") else tokenizer
        text = arch.expansion.format(
            boi=vocab.convert_ids_to_tokens(self.placeholder_id),
            eoi=vocab.convert_ids_to_tokens(int(cfg.get("eoi_token_index", -1)))
            if "eoi_token_index" in cfg else "",
            image=vocab.convert_ids_to_tokens(self.image_token_id) * self.tokens_per_image)
        self.expansion = list(vocab.encode(text, add_special_tokens=False))
        if self.expansion.count(self.image_token_id) != self.tokens_per_image:
            raise ModelLoadError(f"{path}: the tokenizer splits the image tokens")
        self.vocab_size = int(cfg.get("vocab_size") or cfg["text_config"]["vocab_size"])
        self.counters = {"images_encoded": 0, "image_cache_hits": 0, "image_tokens_prefilled": 0}
        self._features = FeatureCache(cache_size, self.counters)

    # -- request side (a worker thread): numpy and PIL only -------------------
    def prepare(self, tokens: Sequence[int], images: Sequence[tuple[bytes, str]]
                ) -> tuple[list[int], tuple[PromptImage, ...]]:
        """Expand each image placeholder the template emitted into the image's tokens.

        `images` are (bytes, sha256) in message order. Returns the prompt the engine sees
        (image tokens carry ids derived from the digest) and where each image sits."""
        at = [i for i, t in enumerate(tokens) if t == self.placeholder_id]
        if len(at) != len(images):
            raise InvalidRequestError(
                f"The chat template placed {len(at)} images but the messages carry "
                f"{len(images)}.", "messages")
        first = self.expansion.index(self.image_token_id)
        out: list[int] = []
        spans = []
        prev = 0
        for pos, (data, digest) in zip(at, images):
            out += tokens[prev:pos]
            start = len(out) + first
            keys = _key_ids(digest, self.tokens_per_image, self.vocab_size)
            out += self.expansion[:first] + keys + self.expansion[first + len(keys):]
            spans.append(PromptImage(start, len(keys), digest, self._pixels(data)))
            prev = pos + 1
        return out + list(tokens[prev:]), tuple(spans)

    def _pixels(self, data: bytes) -> np.ndarray:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
        out = self.processor(images=[rgb], return_tensors="np")
        return np.asarray(out["pixel_values"][0], dtype=np.float32)

    # -- engine thread --------------------------------------------------------
    def features(self, image: PromptImage) -> mx.array:
        """The image's rows of the prompt embeddings, (tokens_per_image, hidden)."""
        hit = self._features.get(image.digest)
        if hit is not None:
            return hit
        ids = mx.full((1, image.length), self.image_token_id)
        pixels = mx.array(image.pixels)[None]
        rows = self.vlm.get_input_embeddings(ids, pixels, mask=mx.ones((1, image.length))
                                             ).inputs_embeds[0]
        mx.eval(rows)
        self._features.put(image.digest, rows)
        return rows

    def prefill(self, model: nn.Module, prompt: Sequence[int], images: Sequence[PromptImage],
                cache: Any, reused: int, step: int = 512) -> tuple[Any, int]:
        """Extend (cache, reused) through the last image; text after it is left to the engine."""
        from mlx_lm.models.cache import make_prompt_cache

        if not images:
            return cache, reused
        end = max(im.start + im.length for im in images)
        if reused >= end:
            return cache, reused  # the prefix cache already holds every image
        if cache is None:
            cache, reused = make_prompt_cache(model), 0
        own_arrays(cache)
        ids = mx.array(list(prompt[:end]))
        emb = self.vlm.language_model.model.embed_tokens(ids)
        for im in images:
            emb[im.start:im.start + im.length] = self.features(im).astype(emb.dtype)
        for s in range(reused, end, step):
            e = min(end, s + step)
            model(ids[s:e][None], cache=cache, input_embeddings=emb[s:e][None])
            mx.eval([c.state for c in cache])
        self.counters["image_tokens_prefilled"] += sum(im.length for im in images)
        return cache, end


def own_arrays(cache: list[Any]) -> list[Any]:
    """Before writing into a cache from the prefix cache: its layers are shallow copies whose
    arrays the stored entry shares, and a KVCache with room left writes in place, which
    would overwrite the entry. Cut each to its length so the next write allocates."""
    from mlx_lm.models.cache import KVCache

    for c in cache:
        if isinstance(c, KVCache) and c.keys is not None:
            c.keys, c.values = c.keys[..., :c.offset, :], c.values[..., :c.offset, :]
    return cache


def _key_ids(digest: str, n: int, vocab_size: int) -> list[int]:
    """In-vocabulary ids that stand for this image in prefix-cache keys (never run)."""
    base = int(digest[:15], 16)
    return [(base + 7919 * j) % vocab_size for j in range(n)]


def _load_vlm(path: Path) -> nn.Module:
    """mlx-vlm's model for the folder, lazily: weights are read only where evaluated."""
    try:
        from mlx_vlm.utils import load_model
    except ModuleNotFoundError as e:
        if e.name is None or not e.name.startswith("mlx_vlm"):
            raise
        raise ModelLoadError(f"{path} is a vision-language model; serving images needs the "
                             "vision extra: pip install 'mlx-server[vision]'") from e
    return load_model(path, lazy=True)


def _load_vision_half(path: Path, text_model: nn.Module) -> nn.Module:
    vlm = _load_vlm(path)
    # The engine's text model already holds the language weights: share its embedding
    # table and drop mlx-vlm's copy of the layers before they are ever read from disk.
    lm = vlm.language_model.model
    lm.embed_tokens = text_model.language_model.model.embed_tokens
    lm.layers = []
    mx.eval(vlm.parameters())
    return vlm


def _image_processor(path: Path) -> Any:
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: cannot load its image processor "
                             f"(preprocessor_config.json): {e}") from e


def _config(path: Path) -> dict[str, Any]:
    with open(path / "config.json", encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def load_vision(path: Path, text_model: nn.Module, tokenizer: Any
                ) -> VisionModel | QwenVisionModel | None:
    """The vision half of a VLM folder, or None: not a VLM we wire, or mlx-vlm is missing
    (then the model serves text, and requests with images get a 400 saying why)."""
    from .qwen import ARCHS as QWEN_ARCHS
    from .qwen import QwenVisionModel

    if not is_vision_model(path):
        return None
    qwen = _config(path)["model_type"] in QWEN_ARCHS
    try:
        vision = (QwenVisionModel if qwen else VisionModel)(path, text_model, tokenizer)
    except ModelLoadError as e:
        log.warning("serving %s without images: %s", path, e)
        return None
    log.info("vision: %s tokens per image, image features cached by content hash",
             "grid-sized" if qwen else vision.tokens_per_image)
    return vision
