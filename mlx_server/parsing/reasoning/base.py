"""The reasoning-parser interface and the start/end-marker state machine most formats use."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from mlx_server.parsing._text import WhitespaceTrim, partial_marker_len


class ReasoningStream(ABC):
    """Incremental split of one response; each call returns (reasoning, content) deltas."""

    @abstractmethod
    def feed(self, text: str) -> tuple[str, str]: ...

    @abstractmethod
    def finish(self) -> tuple[str, str]: ...


class ReasoningParser(ABC):
    """One reasoning format. Stateless; `stream()` holds the state of one response."""

    name: ClassVar[str]

    @abstractmethod
    def stream(self, prefilled: bool = False) -> ReasoningStream:
        """`prefilled`: the prompt already opened the thought, so output starts inside it."""

    def parse(self, text: str, prefilled: bool = False) -> tuple[str, str]:
        """Split a whole response into (reasoning, content)."""
        stream = self.stream(prefilled)
        reasoning, content = stream.feed(text)
        tail_reasoning, tail_content = stream.finish()
        return reasoning + tail_reasoning, content + tail_content

    def prompt_is_prefilled(self, prompt: str) -> bool:
        """Whether the rendered prompt ends inside an opened thought."""
        return False


class MarkerReasoningParser(ReasoningParser):
    """Reasoning between a start and an end marker at the start of the output.

    Subclasses only name the markers. Without `prefilled`, text that does not open
    with the start marker is all content; an unclosed thought is all reasoning.
    """

    start: ClassVar[str]
    end: ClassVar[str]
    always_prefilled: ClassVar[bool] = False

    def stream(self, prefilled: bool = False) -> ReasoningStream:
        return MarkerReasoningStream(self.start, self.end, prefilled or self.always_prefilled)

    def prompt_is_prefilled(self, prompt: str) -> bool:
        return prompt.rstrip().endswith(self.start)


class MarkerReasoningStream(ReasoningStream):
    def __init__(self, start: str, end: str, prefilled: bool) -> None:
        self._start, self._end = start, end
        self._prefilled = prefilled
        self._state = "before"  # -> "thinking" -> "answer"
        self._buf = ""
        self._thought = WhitespaceTrim(strip_leading=True)
        self._answer = WhitespaceTrim()

    def feed(self, text: str) -> tuple[str, str]:
        self._buf += text
        return self._drain(final=False)

    def finish(self) -> tuple[str, str]:
        reasoning, content = self._drain(final=True)
        return reasoning, content + self._answer.flush()

    def _drain(self, final: bool) -> tuple[str, str]:
        reasoning = content = ""
        if self._state == "before":
            rest = self._buf.lstrip()
            if rest.startswith(self._start):
                self._buf = rest[len(self._start) :]
                self._state = "thinking"
            elif not final and self._start.startswith(rest):
                return "", ""  # still could be the start marker
            else:
                # A prefilled prompt already opened the thought; a repeated marker was dropped.
                self._state = "thinking" if self._prefilled else "answer"
        if self._state == "thinking":
            i = self._buf.find(self._end)
            if i == -1:
                keep = 0 if final else partial_marker_len(self._buf, 0, (self._end,))
                cut = len(self._buf) - keep
                reasoning, self._buf = self._thought.push(self._buf[:cut]), self._buf[cut:]
                return reasoning, ""
            reasoning = self._thought.push(self._buf[:i])
            self._thought.drop_pending()
            self._buf = self._buf[i + len(self._end) :]
            self._state = "answer"
            self._answer.strip_leading = True
        content, self._buf = self._answer.push(self._buf), ""
        return reasoning, content
