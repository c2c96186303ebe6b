"""How many bytes of KV cache a sequence needs, and how many the engine may use."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx import nn
from mlx_lm.models.cache import make_prompt_cache

log = logging.getLogger("mlx_server.engine")

STEP = 256  # mlx-lm's BatchKVCache.step: batched caches grow this many tokens at a time


def padded_length(n_tokens: int) -> int:
    """The most tokens a batched cache's buffer holds for a longest row of `n_tokens`:
    rounded up to a step, plus the step of spare room a buffer can carry over."""
    return (-(-n_tokens // STEP) + 1) * STEP


@dataclass(frozen=True)
class KVBudget:
    """Per-layer bytes per token (with each layer's window, if any) and the total budget."""

    layers: tuple[tuple[int, int | None], ...]  # (bytes per token, max tokens or None)
    total: int

    def bytes_for(self, n_tokens: int) -> int:
        return sum(per * (min(n_tokens, cap) if cap else n_tokens) for per, cap in self.layers)

    def batch_bytes(self, lengths: Sequence[int], chunk: int = 1) -> int:
        """Bytes of a batch whose rows end at these lengths (prompt + max_tokens), at most.

        mlx-lm's batched caches left-pad every row to the longest and grow in steps of
        `STEP` tokens, so a batch holds rows x the longest row, not the sum of the rows
        (one 2,000-token row beside seven short ones costs eight 2,000-token rows). A
        buffer can also keep up to one step of room that an earlier row allocated (a
        batch that a row left, sliced, is grown by whole steps): one step more. A
        sliding-window layer holds up to its window + `chunk` - 1 tokens while a prompt
        chunk of `chunk` tokens is read.
        """
        if not lengths:
            return 0
        longest = padded_length(max(lengths))
        return len(lengths) * sum(per * (min(longest, cap + chunk - 1) if cap else longest)
                                  for per, cap in self.layers)

    @property
    def bytes_per_token(self) -> int:
        """One more token's bytes while every sliding window still grows (the largest rate)."""
        return sum(per for per, _ in self.layers)

    @classmethod
    def measure(cls, model: nn.Module, budget: int | None,
                make_cache: Callable[[nn.Module], list[Any]] = make_prompt_cache) -> KVBudget:
        """Run one token through a fresh cache and read the sizes back (works for any
        architecture and any `make_cache` storage format: a quantized cache measures smaller)."""
        cache = make_cache(model)
        model(mx.array([[0]]), cache=cache)
        mx.eval([c.state for c in cache])
        layers = []
        for c in cache:
            keys = getattr(c, "keys", None)
            if keys is None or not hasattr(keys, "shape"):
                continue
            per = c.nbytes // max(1, keys.shape[2])
            layers.append((int(per), getattr(c, "max_size", None)))
        total = budget if budget is not None else default_budget(model)
        return cls(tuple(layers), int(total))


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_budget(model: nn.Module) -> int:
    """A quarter of what is left after the weights, on Metal of its recommended working set."""
    from mlx.utils import tree_flatten

    weights = sum(p.nbytes for _, p in tree_flatten(model.parameters()))
    if mx.metal.is_available():
        limit = int(mx.metal.device_info().get("max_recommended_working_set_size", 0))
    else:
        limit = _total_memory()
    budget = max(256 << 20, (limit - weights) // 4)
    log.info("KV-cache budget %.2f GiB (weights %.2f GiB)", budget / 2**30, weights / 2**30)
    return budget
