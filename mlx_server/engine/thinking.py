"""Following a model's thought token by token: where it starts, ends, and when to close it.

Works on token ids only, so it costs nothing per step; the text-level split into
`reasoning_content` happens in the HTTP layer's parsers.
"""

from __future__ import annotations

from typing import Literal

from .types import ThoughtControl

Phase = Literal["start", "thinking", "answer"]


class ThoughtTracker:
    """Feeds on generated tokens; says whether each belongs to the thought or the answer.

    "start": nothing decided yet (the output may open a thought); "thinking": inside it;
    "answer": after it, or the output never opened one.
    """

    def __init__(self, control: ThoughtControl):
        self.control = control
        self.phase: Phase = "thinking" if control.prefilled else "start"
        self.thought_tokens = 0
        self._opening: list[int] = []  # a start marker matched so far
        self._tail: list[int] = []  # the last len(end_ids) thought tokens
        self._forcing: list[int] = []  # end-marker tokens still to force

    def push(self, token: int) -> list[int]:
        """Account for one generated token; returns the tokens now known to be answer."""
        c = self.control
        if self.phase == "start":
            if c.start_ids and token == c.start_ids[len(self._opening)]:
                self._opening.append(token)
                if len(self._opening) == len(c.start_ids):
                    self.phase = "thinking"
                return []
            self.phase = "answer"
            # A partly matched start marker turned out to be answer text after all.
            return [*self._opening, token]
        if self.phase == "thinking":
            self.thought_tokens += 1
            if self._forcing and token == self._forcing[0]:
                self._forcing.pop(0)
            self._tail = (self._tail + [token])[-len(c.end_ids):] if c.end_ids else []
            if c.end_ids and self._tail == list(c.end_ids):
                self.phase, self._forcing = "answer", []
            return []
        return [token]

    def opening_token(self) -> int | None:
        """While undecided, the next token of the start marker (allowed besides a grammar)."""
        if self.phase != "start" or not self.control.start_ids:
            return None
        return self.control.start_ids[len(self._opening)]

    @property
    def in_thought(self) -> bool:
        return self.phase == "thinking"

    def forced_token(self) -> int | None:
        """The token the budget forces next (closing the thought), or None."""
        budget = self.control.budget
        if self.phase != "thinking" or budget is None or not self.control.end_ids:
            return None
        if not self._forcing and self.thought_tokens >= budget:
            self._forcing = list(self.control.end_ids)
        return self._forcing[0] if self._forcing else None
