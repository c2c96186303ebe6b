"""Incremental detokenizing and stop-string matching, per sequence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Prompt tokens decoded ahead of the output so SentencePiece's leading-space rules
# apply to the context, not to the first generated word.
CONTEXT_TOKENS = 4


class IncrementalDecoder:
    """Turns a token stream into text deltas without splitting UTF-8 characters.

    Decodes a short window (from `prefix` to the end) each step and emits only
    what is new, as vLLM does; O(window) per token, exact for any tokenizer.
    """

    def __init__(self, tokenizer: Any, prompt_tail: Sequence[int] = ()):
        self._tok = tokenizer
        self._ids = list(prompt_tail[-CONTEXT_TOKENS:])
        self._prefix = 0
        self._read = len(self._ids)

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def add(self, token: int) -> str:
        self._ids.append(token)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # an incomplete character: wait for the next byte
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :]

    def flush(self) -> str:
        """Whatever is held back at the end, replacement characters included."""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return after[len(before) :] if len(after) > len(before) else ""


class StopMatcher:
    """Finds stop strings across token boundaries and holds back possible partial matches."""

    def __init__(self, stops: Sequence[str]):
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was hit).

        The earliest-starting stop wins, so a hit is only final once no longer stop
        that began before it could still complete.
        """
        if not self._stops:
            return text, False
        buf = self._pending + text
        hit = self._first_hit(buf)
        start = len(buf) - self._partial_suffix(buf)
        if hit is not None and hit <= start:
            self._pending = ""
            return buf[:hit], True
        self._pending = buf[start:]
        return buf[:start], False

    def _first_hit(self, buf: str) -> int | None:
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        return min(hits) if hits else None

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of `buf` that begins, but is not, a stop string."""
        for n in range(min(self._hold, len(buf)), 0, -1):
            tail = buf[-n:]
            if any(s.startswith(tail) and s != tail for s in self._stops):
                return n
        return 0

    def flush(self) -> tuple[str, bool]:
        """End of text: release what was held back, cut at a stop if one is in it."""
        buf, self._pending = self._pending, ""
        hit = self._first_hit(buf)
        return (buf[:hit], True) if hit is not None else (buf, False)
