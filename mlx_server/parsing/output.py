"""One response's text routed through reasoning first, then tool-call parsing.

Thinking text is never searched for tool calls. A tool format that carries its own
reasoning channels (harmony) replaces the reasoning parser.
"""

from __future__ import annotations

from typing import NamedTuple

from mlx_server.parsing.reasoning.base import ReasoningParser, ReasoningStream
from mlx_server.parsing.tool_parsers.base import ToolCallStream, ToolParser
from mlx_server.parsing.types import StreamDelta, ToolCall, Tools


class ParsedOutput(NamedTuple):
    reasoning: str
    content: str
    tool_calls: list[ToolCall]
    warnings: list[str]


class OutputParser:
    """Streaming parse of one response; also `parse_full` for a whole non-streamed one.

    Pass `tool_parser=None` when the request has no tools (or tool_choice is "none"),
    and `prefilled=parser.prompt_is_prefilled(prompt)` for templates that open the thought.
    """

    def __init__(
        self,
        reasoning_parser: ReasoningParser | None,
        tool_parser: ToolParser | None,
        tools: Tools | None = None,
        *,
        prefilled: bool = False,
    ) -> None:
        if tool_parser is not None and tool_parser.handles_reasoning:
            reasoning_parser = None
        self._reasoning_parser = reasoning_parser
        self._tool_parser = tool_parser
        self._tools = tools
        self._prefilled = prefilled
        self._reasoning, self._calls = self._new_streams()

    def _new_streams(self) -> tuple[ReasoningStream | None, ToolCallStream | None]:
        reasoning = (
            self._reasoning_parser.stream(self._prefilled) if self._reasoning_parser else None
        )
        calls = self._tool_parser.stream(self._tools) if self._tool_parser else None
        return reasoning, calls

    def feed(self, text: str) -> StreamDelta:
        reasoning, content = self._reasoning.feed(text) if self._reasoning else ("", text)
        return self._route(reasoning, content, final=False)

    def finish(self) -> StreamDelta:
        reasoning, content = self._reasoning.finish() if self._reasoning else ("", "")
        return self._route(reasoning, content, final=True)

    def _route(self, reasoning: str, content: str, final: bool) -> StreamDelta:
        if self._calls is None:
            return StreamDelta(content=content, reasoning=reasoning)
        delta = self._calls.feed(content) if content else StreamDelta()
        if final:
            delta.extend(self._calls.finish())
        delta.reasoning = reasoning + delta.reasoning
        return delta

    def parse_full(self, text: str) -> ParsedOutput:
        """Parse a whole response, independently of any streaming in progress."""
        reasoning, content = (
            self._reasoning_parser.parse(text, self._prefilled)
            if self._reasoning_parser
            else ("", text)
        )
        if self._tool_parser is None:
            return ParsedOutput(reasoning, content, [], [])
        result = self._tool_parser.parse(content, self._tools)
        return ParsedOutput(
            reasoning + result.reasoning, result.content, result.tool_calls, result.warnings
        )
