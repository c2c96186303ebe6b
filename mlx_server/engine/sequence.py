"""One request's state inside the engine: prompt, text state, counters and timings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx

from .sampling import top_logprobs
from .text import IncrementalDecoder, StopMatcher
from .types import FinishReason, GenerationOutput, GenerationRequest, TokenLogprob

Emit = Callable[[GenerationOutput], None]


@dataclass
class Sequence:
    """Owned by the engine thread; the HTTP side only ever sees GenerationOutputs."""

    request: GenerationRequest
    emit: Emit
    tokenizer: Any
    max_tokens: int
    control: Any = None  # the grammar/thought logits processor (engine/constrained.py)
    reads_logprobs: bool = True  # needs the step's normalized log-probabilities (sampling.py)
    uid: int | None = None
    cached_tokens: int = 0
    snapshot_at: int | None = None
    snapshot_whole: bool = False  # snapshot the whole prompt once read (no split segment)
    completion_tokens: int = 0
    t_submit: float = field(default_factory=time.perf_counter)
    t_admit: float = 0.0
    t_first: float = 0.0
    finished: bool = False
    held_ids: tuple[int, ...] = ()  # tokens whose text is still held back, sent with the next output
    decoder: IncrementalDecoder = field(init=False)
    stopper: StopMatcher = field(init=False)

    def __post_init__(self) -> None:
        self.decoder = IncrementalDecoder(self.tokenizer, self.request.prompt_tokens)
        self.stopper = StopMatcher(self.request.sampling.stop)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def prompt(self) -> list[int]:
        return list(self.request.prompt_tokens)

    def deadline_passed(self, now: float) -> bool:
        t = self.request.timeout_s
        return t is not None and now - self.t_submit > t

    def on_token(self, token: int, logprobs: mx.array, finish: str | None) -> None:
        """Account for one sampled token and emit the text it completes."""
        now = time.perf_counter()
        if self.t_first == 0.0:
            self.t_first = now
        self.completion_tokens += 1
        text, lps = "", ()
        # A stop token (EOS) ends the sequence but is never part of the text.
        if finish != "stop":
            text = self.decoder.add(token)
            if self.request.sampling.logprobs:
                lps = (self._logprob(token, logprobs),)
        if finish is not None:
            text += self.decoder.flush()
        text, hit = self.stopper.feed(text)
        if not hit and finish is not None:
            rest, hit = self.stopper.flush()
            text += rest
        if hit:
            finish = "stop"
        self.emit_output(text, (token,), finish, lps)

    def _logprob(self, token: int, logprobs: mx.array) -> TokenLogprob:
        k = self.request.sampling.top_logprobs
        top = tuple(
            (tid, self.tokenizer.decode([tid]), lp) for tid, lp in top_logprobs(logprobs, k)
        )
        return TokenLogprob(token, self.tokenizer.decode([token]), logprobs[token].item(), top)

    def emit_output(
        self,
        text: str,
        token_ids: tuple[int, ...] = (),
        finish: str | None = None,
        logprobs: tuple[TokenLogprob, ...] = (),
        error: str | None = None,
    ) -> None:
        if self.finished:
            return
        token_ids = self.held_ids + tuple(token_ids)
        if finish is not None:
            self.finished = True
        elif not text and not logprobs:
            self.held_ids = token_ids  # nothing new for the client yet (held back or mid-character)
            return
        self.held_ids = ()
        now = time.perf_counter()
        admit = self.t_admit or now
        first = self.t_first or now
        self.emit(
            GenerationOutput(
                request_id=self.request_id,
                text=text,
                token_ids=token_ids,
                finish_reason=_finish(finish),
                logprobs=logprobs,
                prompt_tokens=len(self.request.prompt_tokens),
                cached_tokens=self.cached_tokens,
                completion_tokens=self.completion_tokens,
                queue_s=admit - self.t_submit,
                prompt_s=max(0.0, first - admit),
                decode_s=max(0.0, now - first),
                error=error,
            )
        )


def _finish(reason: str | None) -> FinishReason | None:
    return reason  # type: ignore[return-value]
