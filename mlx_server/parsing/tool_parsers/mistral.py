"""Mistral: `[TOOL_CALLS]` then a JSON list (v0.3 tokenizers) or `name[ARGS]{...}` (v11+).

    [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]
    [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}
    [TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}

There is no end marker: a call ends where its JSON value ends. Call ids are nine
alphanumerics because Mistral's chat templates reject any other id in the history.
"""

from __future__ import annotations

import re

from mlx_server.parsing._text import random_id, skip_space
from mlx_server.parsing.tool_parsers.base import (
    INVALID,
    Event,
    Malformed,
    ParsedCall,
    ToolCallStream,
    ToolParser,
    arguments_object,
    call_from_json,
    plain_text_step,
    read_calls,
)
from mlx_server.parsing.types import Tools

_MARKER = "[TOOL_CALLS]"
_HEADER = re.compile(r"([\w.\-]+)(?:\[CALL_ID\]([\w\-]+))?\[ARGS\]")


class MistralParser(ToolParser):
    name = "mistral"

    def stream(self, tools: Tools | None = None) -> ToolCallStream:
        return MistralStream(self, tools)

    def new_call_id(self) -> str:
        return random_id(9)


class MistralStream(ToolCallStream):
    def step(self, buf: str, pos: int, final: bool) -> tuple[list[Event], int]:
        events, new_pos, idx, _ = plain_text_step(buf, pos, final, (_MARKER,))
        if idx != pos:
            return events, new_pos
        q = skip_space(buf, pos + len(_MARKER))
        header = None
        if q < len(buf) and buf[q] not in "[{":
            header = _HEADER.match(buf, q)
            if header is None:  # the name form needs its [ARGS] before anything else
                return self._unfinished(buf, pos, final, "expected NAME[ARGS]")
            q = header.end()
        read = self.read_json(buf, q, final)
        if read is None:
            return [], pos
        value, end = read
        raw = buf[pos:end]
        if value is INVALID:
            return [Malformed(raw, "arguments are not valid JSON")], end
        if header is None:
            items = value if isinstance(value, list) else [value]
            return read_calls(
                lambda: [call_from_json(item, keep_id=True) for item in items], raw
            ), end
        name, call_id = header.group(1), header.group(2)
        return read_calls(lambda: [ParsedCall(name, arguments_object(value), call_id)], raw), end

    def _unfinished(self, buf: str, pos: int, final: bool, reason: str) -> tuple[list[Event], int]:
        if not final:
            return [], pos
        return [Malformed(buf[pos:], reason)], len(buf)
