"""gpt-oss "harmony" messages: reasoning, preambles, tool calls and the answer by channel.

    <|channel|>analysis<|message|>Need the weather.<|end|>
    <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json
    <|message|>{"city": "Paris"}<|call|>
    <|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>

`analysis` is reasoning, a message with a `to=` recipient is a call (the recipient may
sit before or after the channel), any other channel is content. `<|call|>` and
`<|return|>` are stop tokens, so the end of the output also ends a message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlx_server.parsing._text import find_first
from mlx_server.parsing.tool_parsers.base import (
    Event,
    Malformed,
    ParsedCall,
    Thought,
    ToolCallStream,
    ToolParser,
    arguments_object,
    json_body,
    plain_text_step,
    read_calls,
)
from mlx_server.parsing.types import Tools

_HEADER_STARTS = ("<|start|>", "<|channel|>")
_ENDS = ("<|end|>", "<|call|>", "<|return|>")
_MESSAGE = "<|message|>"
_RECIPIENT = re.compile(r"\bto=([^\s<]+)")
_CHANNEL = re.compile(r"<\|channel\|>\s*([\w\-]+)")


@dataclass
class _Message:
    channel: str
    recipient: str | None
    header: str  # raw header text, kept to return a malformed call verbatim


class HarmonyParser(ToolParser):
    name = "harmony"
    handles_reasoning = True

    def stream(self, tools: Tools | None = None) -> ToolCallStream:
        return HarmonyStream(self, tools)


class HarmonyStream(ToolCallStream):
    """With parse_calls=False, call messages pass through as text (reasoning-only use)."""

    def __init__(self, parser: ToolParser, tools: Tools | None, parse_calls: bool = True) -> None:
        super().__init__(parser, tools)
        self.parse_calls = parse_calls
        self._message: _Message | None = None

    def step(self, buf: str, pos: int, final: bool) -> tuple[list[Event], int]:
        if self._message is None:
            return self._between(buf, pos, final)
        if self._message.recipient is not None:
            return self._call_body(buf, pos, final, self._message)
        return self._text_body(buf, pos, final, self._message)

    def _between(self, buf: str, pos: int, final: bool) -> tuple[list[Event], int]:
        events, new_pos, idx, marker = plain_text_step(buf, pos, final, _HEADER_STARTS + _ENDS)
        if idx != pos:
            return events, new_pos
        if marker in _ENDS:
            return [], pos + len(marker)  # a stray end token carries nothing
        end = buf.find(_MESSAGE, pos + len(marker))
        if end == -1:
            return ([Malformed(buf[pos:], "unterminated header")], len(buf)) if final else ([], pos)
        header = buf[pos:end]
        channel = _CHANNEL.search(header)
        recipient = _RECIPIENT.search(header)
        self._message = _Message(
            channel.group(1) if channel else "",
            recipient.group(1) if recipient else None,
            buf[pos : end + len(_MESSAGE)],
        )
        # Text of a new message is a new paragraph; the trimmers drop it if nothing follows.
        if self._message.recipient is not None:
            return [], end + len(_MESSAGE)
        if self._message.channel == "analysis":
            return ([Thought("\n\n")] if self.has_reasoning else []), end + len(_MESSAGE)
        return (["\n\n"] if self.has_content else []), end + len(_MESSAGE)

    def _text_body(
        self, buf: str, pos: int, final: bool, message: _Message
    ) -> tuple[list[Event], int]:
        events, new_pos, idx, marker = plain_text_step(buf, pos, final, _ENDS + _HEADER_STARTS)
        if message.channel == "analysis":
            events = [Thought(e) for e in events if isinstance(e, str)]
        if idx != pos:
            return events, new_pos
        self._message = None
        if message.channel == "analysis":
            self.end_thought()
        if marker in _ENDS:
            return [], pos + len(marker)
        return self._between(buf, pos, final)  # a header without an end token: next message

    def _call_body(
        self, buf: str, pos: int, final: bool, message: _Message
    ) -> tuple[list[Event], int]:
        markers = _ENDS + _HEADER_STARTS
        since = max(pos, self.unexamined(pos) - max(map(len, markers)))
        idx, marker = find_first(buf, since, markers)
        if idx == -1 and not final:
            return self.wait(buf, pos)
        self._message = None
        body_end = len(buf) if idx == -1 else idx
        stop = body_end + (len(marker) if marker in _ENDS else 0)
        raw = message.header + buf[pos:stop]
        if not self.parse_calls:
            return [raw], stop
        body = buf[pos:body_end]
        name = message.recipient.removeprefix("functions.") if message.recipient else ""

        def parse() -> list[ParsedCall]:
            return [ParsedCall(name, arguments_object(json_body(body)))]

        return read_calls(parse, raw), stop
