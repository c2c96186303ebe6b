"""Hand each sampled token out in the step that samples it, where the forward is synchronous.

mlx-lm's `GenerationBatch` pipelines: a step queues the forward pass for token t+1 and
only then returns token t, so the host builds the next graph while the device computes.
On MLX's CPU backend with the output projection through BLAS (cpu_head.py), the forward is
synchronous: nothing overlaps, and the pipeline only delays every token by one whole step.
A new sequence's first token waited for its second (TTFT one decode step longer: ~95 ms
of Gemma 3 270M at one row, ~140 ms at eight), and a finished one cost a forward whose
token was thrown away.

`DeferredBatch` steps in the other order: feed the tokens returned last step, sample, and
return the samples at once. Its state between steps is `_feed` (returned, not yet in the
cache) instead of mlx-lm's `_next_tokens` (sampled, not yet returned); `self.tokens` still
lists exactly what the cache holds. mlx-lm builds generation batches by the module-level
name `GenerationBatch` (`PromptProcessingBatch.generate`, `BatchGenerator.__init__`), so
that name is the subclass while `deferring(True)` is active on the constructing thread;
outside it the subclass is mlx-lm's own, step for step.
"""

from __future__ import annotations

import importlib
from typing import Any

import mlx.core as mx
from mlx_lm.generate import GenerationBatch

from .thread_flag import ThreadFlag

_on = ThreadFlag()


class DeferredBatch(GenerationBatch):
    def __init__(self, *args: Any, **kwargs: Any):
        self._deferred = bool(_on)
        self._feed: mx.array | None = None
        super().__init__(*args, **kwargs)  # calls _step once when there are rows

    def _step(self) -> tuple[list[int], list[mx.array]]:
        if not self._deferred:
            return super()._step()
        if self._feed is None:  # from __init__: the prompt's last token, not yet fed
            self._feed, self._next_tokens = self._next_tokens, None
            self._next_logprobs = [None] * len(self.uids)
            return [], []
        # mlx-lm's step with its two halves swapped: the forward on what was returned
        # last, then this step's samples are evaluated and returned.
        self._next_tokens, self._next_logprobs = self._feed, []
        super()._step()  # feeds them (and lists them in self.tokens), samples the next
        sampled, logprobs = self._next_tokens, self._next_logprobs
        mx.eval(sampled, logprobs)
        self._feed, self._next_tokens, self._current_tokens = sampled, None, None
        self._next_logprobs = [None] * len(self.uids)  # filter() keeps this list row-aligned
        return sampled.tolist(), logprobs

    def extend(self, batch: GenerationBatch) -> None:
        if not self._deferred:
            return super().extend(batch)
        feeds = [b._feed for b in (self, batch) if b._feed is not None]
        slots = [None] * (len(self.uids) + len(batch.uids))
        super().extend(batch)  # (it would take the new batch's lists, our _next_tokens being None)
        self._feed = mx.concatenate(feeds) if len(feeds) > 1 else (feeds[0] if feeds else None)
        self._next_tokens, self._next_logprobs = None, slots

    def filter(self, keep: list[int]) -> None:
        if not self._deferred:
            return super().filter(keep)
        self._next_tokens = self._feed  # filtered where mlx-lm filters its pending tokens
        super().filter(keep)
        self._feed, self._next_tokens = self._next_tokens, None


_gen_mod = importlib.import_module("mlx_lm.generate")  # the package re-exports a function by that name
_gen_mod.GenerationBatch = DeferredBatch  # mlx-lm's behaviour unless `deferring(True)`


# Within `deferring(True)`: generation batches this thread creates return samples the
# step they are made.
deferring = _on.set
