"""A deterministic `EngineClient` for testing the HTTP layer without a model.

It tokenizes on whitespace (one id per distinct word, assigned on first sight), renders
chats as `<role> content` lines, and "generates" the words of a fixed script one token
per output, honoring max_tokens, stop strings (held back while they may still match),
ignore_eos, seeds (the seed picks where in the script to start), logprobs and aborts.
Knobs make it slow, raise any engine error, fail mid-stream, or report any health.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mlx_server.engine.types import (
    EngineError,
    GenerationOutput,
    GenerationRequest,
    Health,
    ModelInfo,
    PromptTooLongError,
    TemplateError,
    SlotInfo,
    TokenLogprob,
)

# The times every output reports, so timings and metrics have known values.
QUEUE_S, PROMPT_S, DECODE_S_PER_TOKEN = 0.001, 0.02, 0.01

SCRIPT = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]


@dataclass
class FakeEngine:
    model_id: str = "fake-model"
    ctx_size: int = 512
    vocab_size: int = 1000
    script: list[str] = field(default_factory=lambda: list(SCRIPT))
    delay_s: float = 0.0  # between outputs
    raise_on_generate: EngineError | None = None  # raised before the first output
    fail_after: int | None = None  # finish with "error" after this many tokens
    raise_after: int | None = None  # raise an exception after this many tokens
    template_error: str | None = None
    state: Health = field(default_factory=lambda: Health(ok=True, status="ok"))
    # What the tests inspect.
    requests: list[GenerationRequest] = field(default_factory=list)
    renders: list[dict[str, Any]] = field(default_factory=list)
    aborted: set[str] = field(default_factory=set)  # closed or aborted before finishing
    finished: set[str] = field(default_factory=set)
    _vocab: dict[str, int] = field(default_factory=dict)
    _words: dict[int, str] = field(default_factory=dict)
    _seen_prompts: list[tuple[int, ...]] = field(default_factory=list)
    # For /slots, /metrics and shutdown drains: sequences running, aborts asked for, and
    # engine-wide counters shaped like the real engine's stats().
    running: dict[str, SlotInfo] = field(default_factory=dict)
    abort_requested: set[str] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys((
        "steps", "decode_steps", "busy_slot_steps", "prefix_cache_queried_tokens",
        "prefix_cache_hit_tokens"), 0))

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(id=self.model_id, path="/fake/" + self.model_id, ctx_size=self.ctx_size,
                         vocab_size=self.vocab_size, chat_template=None, created=1700000000,
                         max_slots=4)

    # ------------------------------------------------------------ tokenizer and template

    def _id(self, word: str) -> int:
        if word not in self._vocab:
            self._vocab[word] = len(self._vocab) + 1
            self._words[self._vocab[word]] = word
        return self._vocab[word] % self.vocab_size

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [self._id(w) for w in text.split()]

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join(self._words.get(t, f"<{t}>") for t in token_ids)

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                    template_kwargs: dict[str, Any] | None = None,
                    add_generation_prompt: bool = True) -> list[int]:
        self.renders.append({"messages": messages, "tools": tools,
                             "template_kwargs": template_kwargs})
        if self.template_error:
            raise TemplateError(self.template_error)
        lines = [f"<{m['role']}> {m['content']}" for m in messages]
        if tools:
            lines.insert(0, "<tools> " + " ".join(t["function"]["name"] for t in tools))
        if add_generation_prompt:
            lines.append("<assistant>")
        return self.encode("\n".join(lines))

    # ------------------------------------------------------------ generation

    def _cached(self, prompt: tuple[int, ...]) -> int:
        """A prefix cache: the longest prefix shared with an earlier prompt, leaving at
        least one token to compute, as real engines do."""
        best = 0
        for seen in self._seen_prompts:
            k = 0
            while k < min(len(seen), len(prompt)) and seen[k] == prompt[k]:
                k += 1
            best = max(best, k)
        self._seen_prompts.append(prompt)
        self.counters["prefix_cache_queried_tokens"] += len(prompt)
        self.counters["prefix_cache_hit_tokens"] += min(best, len(prompt) - 1)
        return min(best, len(prompt) - 1)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        if self.raise_on_generate is not None:
            raise self.raise_on_generate
        prompt = tuple(request.prompt_tokens)
        if len(prompt) + 1 > self.ctx_size:
            raise PromptTooLongError(len(prompt), self.ctx_size)
        self.requests.append(request)
        cached = self._cached(prompt)
        done = False
        slot = SlotInfo(self._free_slot(), request.request_id, len(prompt), cached, 0,
                        request.sampling.max_tokens)
        self.running[request.request_id] = slot
        try:
            async for out in self._outputs(request, len(prompt), cached):
                done = out.finish_reason is not None
                self.running[request.request_id] = replace(
                    slot, generated_tokens=out.completion_tokens)
                if out.token_ids:
                    self.counters["steps"] += 1
                    self.counters["decode_steps"] += 1
                    self.counters["busy_slot_steps"] += len(self.running)
                yield out
        finally:
            # Runs on aclose() and on cancellation alike: an unfinished sequence is aborted.
            (self.finished if done else self.aborted).add(request.request_id)
            self.running.pop(request.request_id, None)

    def _free_slot(self) -> int:
        taken = {s.id for s in self.running.values()}
        return next(i for i in range(len(self.running) + 1) if i not in taken)

    async def _outputs(self, request: GenerationRequest, prompt_len: int, cached: int
                       ) -> AsyncIterator[GenerationOutput]:
        sp = request.sampling
        start = (sp.seed or 0) % len(self.script)
        text, sent, count = "", 0, 0
        counts = dict(prompt_tokens=prompt_len, cached_tokens=cached)
        while True:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            else:
                await asyncio.sleep(0)
            if request.request_id in self.abort_requested:
                yield self._out(request, "", (), "abort", count, counts)
                return
            if self.raise_after is not None and count >= self.raise_after:
                raise EngineError("the fake engine broke")
            if self.fail_after is not None and count >= self.fail_after:
                yield self._out(request, "", (), "error", count, counts, error="fake failure")
                return
            index = start + count
            if index >= len(self.script) and not sp.ignore_eos:
                yield self._out(request, text[sent:], (), "stop", count, counts)
                return
            word = self.script[index % len(self.script)]
            piece = word if count == 0 else " " + word
            count += 1
            text += piece
            token = self._id(word)
            logprobs = self._logprobs(token, piece, count, sp.top_logprobs) if sp.logprobs else ()
            stop_at = _first_stop(text, sp.stop)
            if stop_at is not None:
                yield self._out(request, text[sent:stop_at], (token,), "stop", count, counts,
                                logprobs)
                return
            finish = "length" if count >= sp.max_tokens else None
            # Hold back text that could still become a stop string.
            upto = len(text) if finish else len(text) - _held_back(text, sp.stop)
            out = self._out(request, text[sent:max(upto, sent)], (token,), finish, count, counts,
                            logprobs)
            sent = max(upto, sent)
            yield out
            if finish:
                return

    def _logprobs(self, token: int, piece: str, count: int, top_n: int
                  ) -> tuple[TokenLogprob, ...]:
        lp = -0.25 * (count % 4)
        alternatives = [(token, piece, lp)] + [
            (token + k, f"alt{k}", lp - k) for k in range(1, 20)]
        return (TokenLogprob(token, piece, lp, tuple(alternatives[:top_n])),)

    def _out(self, request: GenerationRequest, text: str, tokens: tuple[int, ...],
             finish: Any, count: int, counts: dict[str, int],
             logprobs: tuple[TokenLogprob, ...] = (), error: str | None = None
             ) -> GenerationOutput:
        return GenerationOutput(
            request_id=request.request_id, text=text, token_ids=tokens, finish_reason=finish,
            logprobs=logprobs, completion_tokens=count, error=error, queue_s=QUEUE_S,
            prompt_s=PROMPT_S, decode_s=DECODE_S_PER_TOKEN * max(0, count - 1), **counts)

    async def abort(self, request_id: str) -> None:
        self.abort_requested.add(request_id)
        if request_id not in self.finished:
            self.aborted.add(request_id)

    def health(self) -> Health:
        return self.state

    def stats(self) -> dict[str, Any]:
        return {"requests": len(self.requests), "time": time.time(), "slots_total": 4,
                "slots_busy": len(self.running), "queue": 0, **self.counters}

    def slots(self) -> list[SlotInfo]:
        by_id = {s.id: s for s in self.running.values()}
        return [by_id.get(i, SlotInfo(i)) for i in range(4)]


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stops if s in text]
    return min(hits) if hits else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                best = max(best, k)
                break
    return best
