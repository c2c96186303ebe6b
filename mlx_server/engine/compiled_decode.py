"""Decode steps replayed as one compiled MLX graph over fixed-shape KV caches (GPU).

A small model's decode step is host-bound on a GPU: Gemma 3 270M's ~450 kernels a step,
and the Python that builds them, cost more than the arithmetic (bench/cuda/RESULTS.md).
`mx.compile` traces a function once per input shapes and replays it from C++ (fusing
elementwise chains), but mlx-lm's batch caches keep their write position and rotation
in Python ints and grow every 256 tokens: a traced step would bake in one position.

`FixedKV` keeps a layer's cache in a shape that stays put while a batch decodes: row b's
token at position p sits in slot p (full-attention layers, capacity grown 256 slots at a
time outside the trace) or in slot p mod W (a sliding window of W as a ring), and the
rows' positions are an int32 array. The model's own `__call__` runs over it unchanged: it
asks a cache only for `offset`, `update_and_fetch` and `make_mask`. A generation batch
converts mlx-lm's caches once, when its rows arrive from prefill, and gives back plain
`KVCache`/`RotatingKVCache` for a row that leaves (prefix-cache snapshots), as mlx-lm's
batch caches do. Sampling and logits processors stay outside the trace, in mlx-lm's step.

Measured on an H100 with the tool that checks it (`python -m bench.compiled_step`, bf16
Gemma 3 270M shape, same greedy tokens): 1.28x the uncompiled step at one row, 1.33x at 32.
On MLX's CPU backend the forward ends in a host sync (cpu_head.py), which a trace cannot
hold, and there are no launches to save: it stays off.
"""

from __future__ import annotations

import importlib
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import (BatchKVCache, BatchRotatingKVCache, KVCache,
                                 RotatingKVCache, dynamic_roll)

from .deferred_step import DeferredBatch
from .kv_budget import STEP  # full-attention capacity grows this many slots at a time, as mlx-lm's
from .thread_flag import ThreadFlag

_on = ThreadFlag()


def _grown(n: int) -> int:
    return (n + STEP - 1) // STEP * STEP


def _to_slots(k: mx.array, v: mx.array, slots: int) -> tuple[mx.array, mx.array]:
    """Keys and values zero-padded along the token axis to `slots` (at least)."""
    extra = slots - k.shape[2]
    if extra <= 0:
        return k, v
    pad = [(0, 0), (0, 0), (0, extra), (0, 0)]
    return mx.pad(k, pad), mx.pad(v, pad)


class FixedKV:
    """One layer's batch KV cache in a fixed shape: (B, heads, capacity, dim) buffers and
    the rows' positions (`offset`, the next token's position per row)."""

    def __init__(self, keys: mx.array, values: mx.array, offset: mx.array,
                 window: int | None, host: list[int]):
        self.keys, self.values, self.offset = keys, values, offset
        self.window = window  # None: full attention; else the ring's size
        self.host = host  # `offset` on the host, for capacity and extraction

    # -- what the model asks of a cache (inside the trace) ----------------------
    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        if k.shape[2] != 1:
            raise ValueError("FixedKV takes one token per row")
        slot = self.offset % self.keys.shape[2] if self.window else self.offset
        idx = mx.broadcast_to(slot.reshape(-1, 1, 1, 1), k.shape)
        self.keys = mx.put_along_axis(self.keys, idx, k, axis=2)
        self.values = mx.put_along_axis(self.values, idx, v, axis=2)
        return self.keys, self.values

    def make_mask(self, n: int, window_size: int | None = None, return_array: bool = False,
                  **_: Any) -> mx.array:
        # Asked before the layers write, for each row's new token at position p. Slot j
        # has been written once j <= p; a ring's slot j then holds the latest position
        # that is j mod W, which lies inside the window. So j <= p marks the keys.
        j = mx.arange(self.keys.shape[2])
        return (j[None] <= self.offset[:, None])[:, None, None, :]

    # -- what a generation batch asks of its caches (outside the trace) --------
    @classmethod
    def from_batch(cls, c: Any) -> FixedKV:
        """Convert one of mlx-lm's batch caches, fresh from prefill."""
        mx.eval(c.offset, c.left_padding)
        host = c.offset.tolist()
        offset = c.offset.astype(mx.int32)
        if isinstance(c, BatchRotatingKVCache):
            w = c.max_size
            c._temporal_order()  # oldest first; the last entry is each row's position - 1
            n = c._idx
            m = min(n, w)
            k, v = _to_slots(c.keys[..., n - m:n, :], c.values[..., n - m:n, :], w)
            # entry i holds position offset - m + i: it goes to slot (offset - m + i) mod w
            shift = ((offset - m) % w)[:, None]
            return cls(dynamic_roll(k, shift, axis=2), dynamic_roll(v, shift, axis=2),
                       offset, w, host)
        n = c._idx
        # entry i holds position i - left_padding: roll each row's padding off the front
        shift = (-c.left_padding)[:, None]
        k = dynamic_roll(c.keys[..., :n, :], shift, axis=2)
        v = dynamic_roll(c.values[..., :n, :], shift, axis=2)
        cap = _grown(max(host) + 1)
        k, v = _to_slots(k, v, cap)
        return cls(k[..., :cap, :], v[..., :cap, :], offset, None, host)

    def ensure_room(self) -> None:
        """Full attention: a slot for every row's next token (a new shape: one retrace)."""
        if self.window is None and max(self.host, default=0) >= self.keys.shape[2]:
            self.keys, self.values = _to_slots(self.keys, self.values, _grown(max(self.host) + 1))

    def extract(self, idx: int) -> Any:
        """Row `idx` as mlx-lm's single-sequence cache (what its batch caches return)."""
        p = self.host[idx]
        k, v = self.keys[idx:idx + 1], self.values[idx:idx + 1]
        if self.window is None:
            cache = KVCache()
            cache.keys, cache.values = mx.contiguous(k[..., :p, :]), mx.contiguous(v[..., :p, :])
            cache.offset = p
            return cache
        w = self.window
        if p >= w:  # slot p mod w holds the oldest position kept: start there
            k, v = mx.roll(k, -(p % w), axis=2), mx.roll(v, -(p % w), axis=2)
        else:
            k, v = k[..., :p, :], v[..., :p, :]
        cache = RotatingKVCache(max_size=w)
        cache.keys, cache.values = mx.contiguous(k), mx.contiguous(v)
        cache.offset, cache._idx = p, k.shape[2]
        return cache

    def filter(self, keep: list[int]) -> None:
        rows = mx.array(keep)
        self.keys, self.values = self.keys[rows], self.values[rows]
        self.offset = self.offset[rows]
        self.host = [self.host[i] for i in keep]
        if self.window is None and self.host:
            # Long rows gone: attend over (and keep) only what the rest still need.
            cap = _grown(max(self.host) + 1)
            if cap < self.keys.shape[2]:
                self.keys, self.values = self.keys[..., :cap, :], self.values[..., :cap, :]

    def extend(self, other: Any) -> None:
        if not isinstance(other, FixedKV):
            other = FixedKV.from_batch(other)
        if self.window is None:
            cap = max(self.keys.shape[2], other.keys.shape[2])
            for c in (self, other):
                c.keys, c.values = _to_slots(c.keys, c.values, cap)
        self.keys = mx.concatenate([self.keys, other.keys])
        self.values = mx.concatenate([self.values, other.values])
        self.offset = mx.concatenate([self.offset, other.offset])
        self.host = self.host + other.host

    def empty(self) -> bool:
        return False

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes


def convertible(cache: list[Any]) -> bool:
    """mlx-lm's own batch caches (not quantized or other subclasses), all holding keys."""
    return bool(cache) and all(type(c) in (BatchKVCache, BatchRotatingKVCache)
                               and c.keys is not None for c in cache)


# Distinct (rows, capacities) traces kept before they are all dropped: `mx.compile` keeps
# one per input shape, and a long-running server meets many batch sizes and lengths.
MAX_TRACES = 64


class CompiledModel:
    """Stands in for the model inside a generation batch: one-token steps over `FixedKV`
    caches run the compiled trace; anything else runs the model as it is."""

    def __init__(self, model: Any):
        self.model = model
        self._windows: tuple[int | None, ...] = ()
        self._fn = mx.compile(self._step)
        self._shapes: set[tuple[int, ...]] = set()

    def _step(self, tokens: mx.array, offset: mx.array, *kv: mx.array) -> tuple[mx.array, ...]:
        caches = [FixedKV(kv[2 * i], kv[2 * i + 1], offset, w, [])
                  for i, w in enumerate(self._windows)]
        logits = self.model(tokens, cache=caches)
        return (logits, *[a for c in caches for a in (c.keys, c.values)])

    def __call__(self, x: mx.array, cache: Any = None, **kw: Any) -> mx.array:
        if kw or x.shape[1] != 1 or not cache:
            return self.model(x, cache=cache, **kw)
        if not all(isinstance(c, FixedKV) for c in cache):
            if not convertible(cache):
                return self.model(x, cache=cache)
            cache[:] = [FixedKV.from_batch(c) for c in cache]  # the batch's own list
        self._windows = tuple(c.window for c in cache)  # the model's layout: always the same
        for c in cache:
            c.ensure_room()
        shape = (x.shape[0], *sorted({c.keys.shape[2] for c in cache}))
        if shape not in self._shapes:
            if len(self._shapes) >= MAX_TRACES:
                # Dropping the compiled function drops its traces (the kernels stay built).
                self._fn, self._shapes = mx.compile(self._step), set()
            self._shapes.add(shape)
        state = [a for c in cache for a in (c.keys, c.values)]
        offset = cache[0].offset
        for c in cache:  # only the trace holds the buffers: MLX may update them in place
            c.keys = c.values = None
        out = self._fn(x, offset, *state)
        del state
        nxt, host = offset + 1, [p + 1 for p in cache[0].host]
        for i, c in enumerate(cache):
            c.keys, c.values, c.offset, c.host = out[1 + 2 * i], out[2 + 2 * i], nxt, host
        return out[0]


def warm_up(model: Any, batch_sizes: list[int]) -> None:
    """Trace decode steps for these batch sizes and build their kernels now, through the
    same conversion a batch from prefill takes. On a GPU, MLX builds kernels the first
    time a shape runs and keeps them on disk (/tmp/mlx): on a fresh H100 the first burst of
    32 requests lost ~3.5 s to that (bench/cuda/RESULTS.md, session 7). This moves the
    sizes traced here to load; batch sizes first met later still build then (the second
    fresh H100's first level at 32 clients, warm-up in place, still ran at 670 tok/s)."""
    from mlx_lm.models.cache import make_prompt_cache

    cm = compiled_model(model)
    one = make_prompt_cache(model)
    model(mx.array([[0]]), cache=one)
    for n in batch_sizes:
        cache = [type(c).merge([c] * n) for c in one]
        if not convertible(cache):
            return
        mx.eval(cm(mx.zeros((n, 1), dtype=mx.int32), cache))


def compiled_model(model: Any) -> CompiledModel:
    """The model's one `CompiledModel` (its traces outlive the generation batches)."""
    cm = model.__dict__.get("_mlx_server_compiled")
    if cm is None:
        cm = CompiledModel(model)
        model.__dict__["_mlx_server_compiled"] = cm
    return cm


class CompiledBatch(DeferredBatch):
    """A generation batch whose one-token steps run `CompiledModel`, when created inside
    `compiling(True)`; otherwise DeferredBatch's (and so mlx-lm's) behaviour."""

    def __init__(self, model: Any, *args: Any, **kwargs: Any):
        if _on:
            model = compiled_model(model)
        super().__init__(model, *args, **kwargs)


_gen_mod = importlib.import_module("mlx_lm.generate")
_gen_mod.GenerationBatch = CompiledBatch  # mlx-lm's behaviour unless a flag is set

# Within `compiling(True)`: generation batches this thread creates decode compiled.
compiling = _on.set
