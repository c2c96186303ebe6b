"""Longest-prefix KV-cache reuse across requests.

Entries are whole per-sequence caches keyed by the tokens they hold. The index is a
chain of block hashes (as nano-vllm's block manager): every full block of BLOCK tokens
hashes together with all blocks before it, so one dict lookup per block finds the
entries that share a prefix, and a final exact comparison extends the match into the
last partial block. LRU eviction keeps the total under a byte budget.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BLOCK = 16


def _chain(tokens: Sequence[int], n_blocks: int) -> list[int]:
    hashes, h = [], 0
    for b in range(n_blocks):
        h = hash((h, tuple(tokens[b * BLOCK : (b + 1) * BLOCK])))
        hashes.append(h)
    return hashes


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


@dataclass
class _Entry:
    tokens: np.ndarray
    cache: list[Any]
    nbytes: int
    trimmable: bool
    hashes: list[int] = field(default_factory=list)


@dataclass
class PrefixCacheStats:
    """Counters for /metrics and /slots."""

    lookups: int = 0
    hits: int = 0
    hit_tokens: int = 0
    queried_tokens: int = 0
    # A longer entry shared a prefix but could not be cut back (rotating window passed).
    untrimmable_skips: int = 0
    evictions: int = 0
    inserts: int = 0


class PrefixCache:
    """An LRU store of KV caches with longest-prefix lookup."""

    def __init__(self, max_bytes: int,
                 sizeof: Callable[[Sequence[int], list[Any]], int] | None = None):
        # `sizeof(tokens, cache)`: an entry's size; by default its arrays' bytes (a
        # distributed run counts tokens instead, so every rank evicts alike).
        self.max_bytes = max_bytes
        self._sizeof = sizeof or (lambda tokens, cache: sum(c.nbytes for c in cache))
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._index: dict[int, set[int]] = {}
        self._next_id = 0
        self.nbytes = 0
        self.stats = PrefixCacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: Sequence[int], max_reuse: int) -> tuple[list[Any] | None, int]:
        """The longest usable cached prefix of `tokens`, at most `max_reuse` tokens long.

        Returns a private copy of the cache (trimmed to the prefix) and its length.
        """
        self.stats.lookups += 1
        self.stats.queried_tokens += len(tokens)
        query = np.asarray(tokens[:max_reuse], dtype=np.int64)
        best: tuple[int, int] | None = None  # (reuse, entry id)
        seen: set[int] = set()
        for level in range(len(query) // BLOCK, 0, -1):
            h = _chain(query, level)[-1]
            ids = self._index.get(h, set()) - seen
            seen |= ids
            for eid in ids:
                reuse = self._usable(self._entries[eid], query)
                if reuse and (best is None or reuse > best[0]):
                    best = (reuse, eid)
            if best and best[0] >= level * BLOCK:
                break  # entries found higher up share fewer tokens
        if best is None:
            return None, 0
        reuse, eid = best
        entry = self._entries[eid]
        self._entries.move_to_end(eid)
        cache = [copy.copy(c) for c in entry.cache]
        if reuse < len(entry.tokens):
            for c in cache:
                c.trim(len(entry.tokens) - reuse)
        self.stats.hits += 1
        self.stats.hit_tokens += reuse
        return cache, reuse

    def _usable(self, entry: _Entry, query: np.ndarray) -> int:
        n = common_prefix(entry.tokens, query)
        if n == len(entry.tokens) or entry.trimmable:
            return n
        self.stats.untrimmable_skips += 1
        return 0

    def insert(self, tokens: Sequence[int], cache: list[Any]) -> bool:
        """Store a cache holding exactly `tokens`. Returns False if it was not kept."""
        nbytes = self._sizeof(tokens, cache)
        if not tokens or nbytes > self.max_bytes:
            return False
        arr = np.asarray(tokens, dtype=np.int64)
        trimmable = all(c.is_trimmable() for c in cache)
        for eid, e in list(self._entries.items()):
            n = common_prefix(e.tokens, arr)
            if n == len(arr) and (e.trimmable or len(e.tokens) == n):
                self._entries.move_to_end(eid)
                return False  # an entry already serves every prefix this one would
            if trimmable and n == len(e.tokens):
                self._remove(eid)  # the new entry can be trimmed to anything this one served
        eid, self._next_id = self._next_id, self._next_id + 1
        entry = _Entry(arr, cache, nbytes, trimmable, _chain(arr, len(arr) // BLOCK))
        self._entries[eid] = entry
        for h in entry.hashes:
            self._index.setdefault(h, set()).add(eid)
        self.nbytes += nbytes
        self.stats.inserts += 1
        self.shrink_to(self.max_bytes)
        return True

    def shrink_to(self, max_bytes: int) -> int:
        """Evict least-recently-used entries until at most `max_bytes` remain; returns bytes freed."""
        freed = 0
        while self._entries and self.nbytes > max(0, max_bytes):
            eid = next(iter(self._entries))
            freed += self._entries[eid].nbytes
            self._remove(eid)
            self.stats.evictions += 1
        return freed

    def _remove(self, eid: int) -> None:
        entry = self._entries.pop(eid)
        self.nbytes -= entry.nbytes
        for h in entry.hashes:
            ids = self._index.get(h)
            if ids is not None:
                ids.discard(eid)
                if not ids:
                    del self._index[h]

    def clear(self) -> None:
        self.shrink_to(0)
