"""Speculative decoding inside continuous batching.

`SpeculativeBatch` replaces mlx-lm's generation batch: every step each sequence proposes
up to k draft tokens (prompt lookup, `ngram.py`, or a draft model, `spec_draft.py`), then
ONE batched forward of the target model over [B, L] tokens verifies them all.

Acceptance differs per sequence but batched caches advance uniformly, so after each step
every row's cache is cut back to the batch's shortest accepted run; a row's accepted
tokens beyond that stay "pending" and are fed again (their KV recomputed) at the head of
its next input. Every emitted token is final when emitted: greedy rows accept a draft
when it is the target's argmax; sampling rows use speculative rejection sampling, so the
output follows the target's distribution exactly (with its own PRNG stream: a seeded
request is reproducible, but not identical to the same seed without speculation).

Rows with logits processors (grammars, logit_bias, penalties) do not draft: their
processors are stateful per sampled token. They still run in the speculative batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, GenerationBatch

from ..config import SpecConfig
from . import panels
from .loader import LoadedModel
from .ngram import NgramIndex
from .spec_draft import (
    DraftRunner,
    load_draft,
    target_logprobs,
    trim_cache,
    trimmable,
    unrotate,
)
from .types import SamplingParams

ParamsOf = Callable[[int], "SamplingParams | None"]


@dataclass
class _Row:
    pending: list[int]  # accepted tokens not in the KV cache yet; the last is the newest
    index: NgramIndex  # prompt + every accepted token: n-gram history and processor context
    params: SamplingParams | None  # None: not known here, sample with the row's own sampler
    key: Any
    fresh_lp: Any = None  # logprobs of the first token, still to be emitted
    drafts: list[int] = field(default_factory=list)
    dists: list[Any] = field(default_factory=list)  # the draft model's q per draft


class Speculator:
    """One engine's speculative decoding: its config, draft model and counters."""

    def __init__(self, loaded: LoadedModel, config: SpecConfig, params_of: ParamsOf):
        self.config = config
        self.params_of = params_of
        self.draft = load_draft(config.draft_model, loaded) if config.draft_model else None
        self.stats = {"spec_steps": 0, "spec_draft_tokens": 0, "spec_accepted_tokens": 0,
                      "spec_fallback_steps": 0}

    def install(self, gen: BatchGenerator) -> None:
        """Make `gen` decode speculatively (its generation batch is created empty once)."""
        batch = SpeculativeBatch.empty(gen.model, gen.sampler)
        batch.spec = self
        batch.rows = []
        batch.runner = DraftRunner(self.draft.model) if self.draft is not None else None
        gen._generation_batch = batch


class SpeculativeBatch(GenerationBatch):
    """mlx-lm's GenerationBatch with a draft-and-verify `next`."""

    spec: Speculator
    rows: list[_Row]
    runner: DraftRunner | None

    def extend(self, batch: GenerationBatch) -> None:
        tails = [t[-1] for t in self.tokens]
        super().extend(batch)
        first = batch._next_tokens.tolist()
        cfg = self.spec.config
        for j, uid in enumerate(batch.uids):
            params = self.spec.params_of(uid)
            seed = params.seed if params is not None and params.seed is not None else None
            self.rows.append(_Row(
                pending=[first[j]],
                index=NgramIndex(list(batch.tokens[j]), cfg.ngram_n, cfg.ngram_min),
                params=params,
                key=mx.random.key(seed if seed is not None else secrets.randbits(63)),
                fresh_lp=batch._next_logprobs[j]))
        if self.runner is not None:
            self.runner.add_rows([list(t) for t in batch.tokens], tails)

    def filter(self, keep: list[int]) -> None:
        super().filter(keep)
        self.rows = [self.rows[i] for i in keep]
        if self.runner is not None:
            self.runner.filter(keep)

    # -- one step -------------------------------------------------------------
    def next(self) -> list[GenerationBatch.Response]:
        out: list[GenerationBatch.Response] = []
        done = {i for i, r in enumerate(self.rows) if r.fresh_lp is not None
                and self._emit(i, [r.pending[0]], [r.fresh_lp], out)}
        for r in self.rows:
            r.fresh_lp = None
        self._drop(done)
        done = set()
        if not self.uids:
            return out
        can_cut = trimmable(self.prompt_cache)
        if not can_cut:
            self.spec.stats["spec_fallback_steps"] += 1
        self._propose(can_cut)
        inputs = [r.pending + r.drafts for r in self.rows]
        width = max(len(x) for x in inputs)
        inputs = [x + [x[-1]] * (width - len(x)) for x in inputs]  # padding: never verified
        if width > 1:
            unrotate(self.prompt_cache)
        with panels.EVERY_ROW.set(True):  # every row's logits are verified
            logits = self.model(mx.array(inputs), cache=self.prompt_cache)
        lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        results = self._verify(lp)
        valid = [len(r.pending) + len(acc) for r, (acc, _, _) in zip(self.rows, results)]
        m = min(valid)
        trim_cache(self.prompt_cache, width - m)
        if self.runner is not None:
            self.runner.settle(m)
        self._count(width, results)
        for i, (r, (acc, new, lps)) in enumerate(zip(self.rows, results)):
            self.tokens[i].extend(inputs[i][:m])
            r.pending = inputs[i][m: valid[i]] + [new]
            if self._emit(i, acc + [new], lps, out):
                done.add(i)
        self._drop(done)
        return out

    def _count(self, width: int, results: list[tuple[list[int], int, list[Any]]]) -> None:
        stats = self.spec.stats
        if width > 1 and any(r.drafts for r in self.rows):
            stats["spec_steps"] += 1
            stats["spec_draft_tokens"] += sum(len(r.drafts) for r in self.rows)
            stats["spec_accepted_tokens"] += sum(len(acc) for acc, _, _ in results)

    def _propose(self, allowed: bool) -> None:
        """Fill every row's `drafts` (and the draft model's distributions).

        Not `allowed` (caches that cannot be cut): no drafts, but a draft model still reads
        the pending tokens, so that its cache keeps step.
        """
        cfg = self.spec.config
        rooms = []
        for i, r in enumerate(self.rows):
            left = self.max_tokens[i] - self._num_tokens[i] - 1  # the verify step adds one
            drafting = allowed and r.params is not None and not self.logits_processors[i]
            rooms.append(max(0, min(cfg.draft_max + 1 - len(r.pending), left)) if drafting else 0)
            r.drafts, r.dists = [], []
        if self.runner is None:
            for r, room in zip(self.rows, rooms):
                r.drafts = r.index.propose(room)
        else:
            lag = self.runner.lag
            known = [t[len(t) - lag:] + r.pending for t, r in zip(self.tokens, self.rows)]
            params = [None if r.params is None or r.params.temperature == 0 else r.params
                      for r in self.rows]
            keys = [r.key for r in self.rows]
            drafts, dists = self.runner.draft(known, rooms, params, keys, cfg.p_min)
            for r, d, q, k in zip(self.rows, drafts, dists, keys):
                r.drafts, r.dists, r.key = d, q, k
        for r in self.rows:
            if len(r.drafts) < cfg.draft_min:
                r.drafts, r.dists = [], []

    def _verify(self, lp: mx.array) -> list[tuple[list[int], int, list[Any]]]:
        """Per row: (accepted drafts, the token after them, logprobs of all those tokens)."""
        greedy_rows = [r.params is not None and r.params.temperature == 0 for r in self.rows]
        top = mx.argmax(lp, axis=-1).tolist() if any(greedy_rows) else None
        results = []
        for i, r in enumerate(self.rows):
            base = len(r.pending) - 1
            if self.logits_processors[i] or r.params is None:
                results.append(self._sample_own(i, lp[i, base]))
            elif greedy_rows[i]:
                acc = 0
                while acc < len(r.drafts) and top[i][base + acc] == r.drafts[acc]:
                    acc += 1
                row_lp = [lp[i, base + j] for j in range(acc + 1)]
                results.append((r.drafts[:acc], top[i][base + acc], row_lp))
            else:
                results.append(self._rejection_sample(r, lp[i, base: base + len(r.drafts) + 1]))
        return results

    def _sample_own(self, i: int, lp: mx.array) -> tuple[list[int], int, list[Any]]:
        """A non-drafting row: its processors and its own sampler, as mlx-lm's step does."""
        processors = self.logits_processors[i] or ()
        logits = lp[None]
        if processors:
            context = mx.array(self.rows[i].index.tokens)
            for p in processors:
                logits = p(context, logits)
            logits = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        sampler = (self.samplers[i] if self.samplers else None) or self.fallback_sampler
        return [], int(sampler(logits).item()), [logits[0]]

    def _rejection_sample(self, r: _Row, lp: mx.array) -> tuple[list[int], int, list[Any]]:
        """Accept draft x with probability min(1, p(x)/q(x)); on rejection draw from
        normalized max(p - q, 0). q is one-hot for prompt-lookup drafts."""
        assert r.params is not None
        tl = target_logprobs(lp, r.params)
        for j, x in enumerate(r.drafts):
            p = mx.exp(tl[j])
            q = mx.exp(r.dists[j]) if r.dists else None
            px = p[x].item()
            qx = q[x].item() if q is not None else 1.0
            r.key, sub = mx.random.split(r.key)
            if mx.random.uniform(key=sub).item() * qx < px:
                continue
            if q is None:
                resid = p * (mx.arange(p.shape[0]) != x)
            else:
                resid = mx.maximum(p - q, 0.0)
            r.key, sub = mx.random.split(r.key)
            new = int(mx.random.categorical(mx.log(resid), key=sub).item())
            return r.drafts[:j], new, [lp[k] for k in range(j + 1)]
        r.key, sub = mx.random.split(r.key)
        new = int(mx.random.categorical(tl[len(r.drafts)], key=sub).item())
        return list(r.drafts), new, [lp[k] for k in range(len(r.drafts) + 1)]

    # -- emission -------------------------------------------------------------
    def _emit(self, i: int, tokens: list[int], lps: list[Any],
              out: list[GenerationBatch.Response]) -> bool:
        """Emit tokens in order, cutting at max_tokens or a stop; True if the row finished."""
        for t, lp in zip(tokens, lps):
            self._num_tokens[i] += 1
            reason = "length" if self._num_tokens[i] >= self.max_tokens[i] else None
            if self._matchers[i].advance(t):
                reason = "stop"
            if reason is not None:
                out.append(self.Response(self.uids[i], t, lp, reason, self.extract_cache(i),
                                         self.tokens[i]))
                return True
            out.append(self.Response(self.uids[i], t, lp, None, None, None))
            self.rows[i].index.extend([t])
        return False

    def _drop(self, done: set[int]) -> None:
        if done:
            self.filter([i for i in range(len(self.uids)) if i not in done])
