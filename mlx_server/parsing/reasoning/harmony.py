"""gpt-oss harmony: the analysis channel is reasoning, final and preamble text is content.

Used when no tool parser runs; call messages then pass through as text. With the
harmony tool parser the tool parser reads the channels itself.
"""

from __future__ import annotations

from mlx_server.parsing.reasoning.base import ReasoningParser, ReasoningStream
from mlx_server.parsing.tool_parsers import get_tool_parser
from mlx_server.parsing.tool_parsers.harmony import HarmonyStream


class HarmonyReasoningParser(ReasoningParser):
    name = "harmony"

    def stream(self, prefilled: bool = False) -> ReasoningStream:
        return _HarmonyReasoningStream()


class _HarmonyReasoningStream(ReasoningStream):
    def __init__(self) -> None:
        self._stream = HarmonyStream(get_tool_parser("harmony"), None, parse_calls=False)

    def feed(self, text: str) -> tuple[str, str]:
        delta = self._stream.feed(text)
        return delta.reasoning, delta.content

    def finish(self) -> tuple[str, str]:
        delta = self._stream.finish()
        return delta.reasoning, delta.content
