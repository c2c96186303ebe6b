"""The pieces of speculative decoding below the batch: cutting batched KV caches back,
distributions for rejection sampling, and a draft model run on its own batched caches."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm.generate import _extend_cache, _merge_caches
from mlx_lm.models.cache import BatchKVCache, BatchRotatingKVCache, make_prompt_cache
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

from . import panels
from .loader import LoadedModel, load_model
from .types import ModelLoadError, SamplingParams

log = logging.getLogger("mlx_server.engine")

PREFILL_CHUNK = 512


def trimmable(cache: list[Any]) -> bool:
    """Whether every layer is a batched KV cache this module knows how to cut back."""
    return all(isinstance(c, (BatchKVCache, BatchRotatingKVCache)) for c in cache)


def unrotate(cache: list[Any]) -> None:
    """Put rotated sliding-window caches in temporal order before a multi-token forward.

    mlx-lm builds the mask before the update, from the rotated write index, while the
    update first reorders: for left-padded rows the two disagree by one position.
    """
    for c in cache:
        if isinstance(c, BatchRotatingKVCache) and c.rotated:
            c._temporal_order()


def trim_cache(cache: list[Any], n: int) -> bool:
    """Drop the newest `n` positions of every row; False if some window context was lost.

    A sliding-window cache holds only its window: right after a multi-token update it
    keeps window-1+L positions, so cutting up to L-1 of them is exact. Otherwise (a draft
    model's single-token steps) the cut is filled with masked padding and the window is
    briefly short, which only a draft model may tolerate.
    """
    exact = True
    if n <= 0:
        return exact
    for c in cache:
        if isinstance(c, BatchRotatingKVCache):
            exact &= _trim_rotating(c, n)
        else:
            c.trim(n)
    return exact


def _trim_rotating(c: BatchRotatingKVCache, n: int) -> bool:
    c._temporal_order()
    keep = c._idx - n
    evicted = c._offset > c._idx  # positions before the buffer's start were dropped
    c.keys, c.values = c.keys[..., :keep, :], c.values[..., :keep, :]
    c._idx, c._offset, c.offset = keep, c._offset - n, c.offset - n
    if not evicted or keep >= c.max_size:
        return True
    pad = c.max_size - keep  # keep the buffer full: the single-token path assumes it
    widths = [(0, 0), (0, 0), (pad, 0), (0, 0)]
    c.keys, c.values = mx.pad(c.keys, widths), mx.pad(c.values, widths)
    c.left_padding = c.left_padding + pad
    c._idx = c.max_size
    return False


def target_logprobs(logprobs: mx.array, params: SamplingParams) -> mx.array:
    """The distribution the request's sampler draws from (engine/sampling.py), normalized."""
    x = logprobs
    if 0.0 < params.top_p < 1.0:
        x = apply_top_p(x, params.top_p)
    if params.min_p > 0.0:
        x = apply_min_p(x, params.min_p, 1)
    if params.top_k > 0:
        x = apply_top_k(x, params.top_k)
    x = x * (1.0 / params.temperature)
    return x - mx.logsumexp(x, axis=-1, keepdims=True)


def load_draft(path: str, target: LoadedModel) -> LoadedModel:
    """Load `-md PATH` like the target model and check that both speak the same vocabulary."""
    from ..loading.resolve import resolve_model  # the same resolution as -m (GGUF, HF id, ...)

    try:
        resolved = resolve_model(path, progress=False)
        draft = load_model(Path(resolved.path))
    except Exception as e:
        raise ModelLoadError(f"--model-draft {path}: {e}") from e
    if draft.vocab_size != target.vocab_size or (
            draft.tokenizer._tokenizer.get_vocab() != target.tokenizer._tokenizer.get_vocab()):
        raise ModelLoadError(
            f"--model-draft {path}: its vocabulary ({draft.vocab_size} tokens) differs from the "
            f"model's ({target.vocab_size} tokens); a draft model must share the tokenizer.")
    return draft


class DraftRunner:
    """A draft model's batched caches, kept one row per generating sequence.

    The draft cache of a row holds the row's committed tokens except the last `lag`
    (0 or 1): cuts are uniform across the batch, so the lag is too.
    """

    def __init__(self, model: Any):
        self.model = model
        self.cache: list[Any] = []
        self.lag = 0
        self.fed = 0  # positions the last `draft` call wrote past the cache's start

    def add_rows(self, committed: list[list[int]], existing_tails: list[int]) -> None:
        """New rows join with their committed tokens; existing rows first catch up their lag."""
        if self.lag and self.cache:
            self.model(mx.array(existing_tails)[:, None], cache=self.cache)
        self.lag = 0
        caches = []
        for toks in committed:
            c = make_prompt_cache(self.model)
            for s in range(0, len(toks), PREFILL_CHUNK):
                self.model(mx.array(toks[s: s + PREFILL_CHUNK])[None], cache=c)
                mx.eval([x.state for x in c])
            caches.append(c)
        self.cache = _extend_cache(self.cache, _merge_caches(caches))

    def filter(self, keep: list[int]) -> None:
        if not keep:
            self.cache, self.lag = [], 0
            return
        for c in self.cache:
            c.filter(keep)

    def draft(self, known: list[list[int]], room: list[int],
              params: list[SamplingParams | None], keys: list[Any], p_min: float) -> tuple[list[list[int]], list[list[mx.array]]]:
        """Draft up to room[i] tokens after each row's `known` tokens (its lag tail + pending).

        Returns the drafts and, per draft, the draft's log-distribution (for rejection
        sampling; None: greedy). Greedy rows stop drafting below `p_min` confidence.
        """
        seqs = [list(k) for k in known]
        want = [len(k) + r for k, r in zip(known, room)]
        done = [r <= 0 for r in room]
        dists: list[list[mx.array]] = [[] for _ in known]
        pos = min(len(k) for k in known)
        if pos > 1:
            unrotate(self.cache)
        with panels.EVERY_ROW.set(True):  # evaluated (last position), not a cache fill
            logits = self.model(mx.array([s[:pos] for s in seqs]), cache=self.cache)[:, -1, :]
        self.fed = pos
        while True:
            lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            self._extend_rows(lp, seqs, want, done, params, keys, dists, pos, p_min)
            if all(d and pos >= len(k) - 1 for d, k in zip(done, known)):
                break
            col = [s[pos] if pos < len(s) else s[-1] for s in seqs]
            logits = self.model(mx.array(col)[:, None], cache=self.cache)[:, -1, :]
            pos += 1
            self.fed = pos
        return [s[len(k):] for s, k in zip(seqs, known)], dists

    @staticmethod
    def _extend_rows(lp: mx.array, seqs: list[list[int]], want: list[int], done: list[bool],
                     params: list[SamplingParams | None], keys: list[Any], dists: list[list[mx.array]],
                     pos: int, p_min: float) -> None:
        """Append one draft to every row that is past its known tokens and still drafting."""
        top = mx.argmax(lp, axis=-1)
        best_p = mx.exp(mx.max(lp, axis=-1))
        mx.eval(top, best_p)
        top_l, best_l = top.tolist(), best_p.tolist()
        for i, s in enumerate(seqs):
            if done[i] or pos < len(s):
                continue
            sp = params[i]
            if sp is None:
                if best_l[i] < p_min:
                    done[i] = True
                    continue
                s.append(top_l[i])
            else:
                q = target_logprobs(lp[i: i + 1], sp)[0]
                keys[i], sub = mx.random.split(keys[i])
                s.append(int(mx.random.categorical(q, key=sub).item()))
                dists[i].append(q)
            done[i] = len(s) >= want[i]

    def settle(self, committed_delta: int) -> None:
        """After verification: keep the draft cache `lag` behind the committed tokens."""
        excess = self.fed - (self.lag + committed_delta)
        if excess >= 0:
            trim_cache(self.cache, excess)
            self.lag = 0
        else:
            self.lag = -excess
