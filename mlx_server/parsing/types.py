"""The vocabulary of the parsers: plain dataclasses, no HTTP or mlx types.

`tools` everywhere is the request's list of OpenAI tool dicts
(`{"type": "function", "function": {"name", "parameters"}}`), already turned into
plain Python data by the HTTP layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Tools = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class ToolCall:
    """One complete tool call; `arguments` is the JSON text of an object."""

    id: str
    name: str
    arguments: str


@dataclass
class ParseResult:
    """A whole response split into user-visible text, tool calls and reasoning.

    `warnings` names each malformed call that was kept as plain content, for the log.
    """

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ToolCallDelta:
    """One OpenAI streaming tool-call entry.

    The first delta of a call carries `id` and `name`; later ones only argument text.
    Concatenating a call's `arguments_fragment`s gives its final `arguments`.
    """

    index: int
    id: str | None
    name: str | None
    arguments_fragment: str


@dataclass
class StreamDelta:
    """What one `feed` or `finish` adds to the response; empty fields mean nothing new."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.tool_calls or self.warnings)

    def extend(self, other: StreamDelta) -> StreamDelta:
        """Append `other` to this delta in place and return self."""
        self.content += other.content
        self.reasoning += other.reasoning
        self.tool_calls.extend(other.tool_calls)
        self.warnings.extend(other.warnings)
        return self
