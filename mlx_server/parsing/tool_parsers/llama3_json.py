"""Llama 3.1/3.2/3.3 JSON calls, with or without the <|python_tag|> token, `;`-separated.

    {"name": "get_weather", "parameters": {"city": "Paris"}}
    <|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "parameters": {}}

Without the tag a call counts only at the start of the output, and only a JSON object
shaped like a call: other JSON there is the answer itself and stays content.
"""

from __future__ import annotations

import re
from typing import Any

from mlx_server.parsing._text import skip_space
from mlx_server.parsing.tool_parsers.base import (
    INVALID,
    Event,
    Malformed,
    MalformedCall,
    ToolCallStream,
    ToolParser,
    call_from_json,
    plain_text_step,
)
from mlx_server.parsing.types import Tools

_TAG = "<|python_tag|>"
_HEAD = re.compile(r'\{\s*"(?:name|type)"')
_HEAD_PREFIX = re.compile(r'\{\s*(?:"(?:n(?:a(?:m(?:e)?)?)?|t(?:y(?:p(?:e)?)?)?)?)?')


def _is_call(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("name"), str)
        and ("parameters" in value or "arguments" in value)
    )


class Llama3JsonParser(ToolParser):
    name = "llama3_json"

    def stream(self, tools: Tools | None = None) -> ToolCallStream:
        return Llama3JsonStream(self, tools)


class Llama3JsonStream(ToolCallStream):
    def __init__(self, parser: ToolParser, tools: Tools | None) -> None:
        super().__init__(parser, tools)
        self._at_start = True
        self._after_call = False

    def step(self, buf: str, pos: int, final: bool) -> tuple[list[Event], int]:
        if self._after_call or self._at_start:
            q = skip_space(buf, pos)
            if q == len(buf):
                return ([buf[pos:]], len(buf)) if final else ([], pos)
            if self._after_call and buf[q] == ";":
                return self._json_call(buf, pos, q, q + 1, final, tagged=True)
            self._after_call = False
            if self._at_start and buf[q] == "{":
                if _HEAD.match(buf, q):
                    return self._json_call(buf, pos, q, q, final, tagged=False)
                if not final and _HEAD_PREFIX.fullmatch(buf, q):
                    return [], pos
            self._at_start = False
        events, new_pos, idx, _ = plain_text_step(buf, pos, final, (_TAG,))
        if idx != pos:
            return events, new_pos
        return self._json_call(buf, pos, pos, pos + len(_TAG), final, tagged=True)

    def _json_call(
        self, buf: str, pos: int, region: int, json_at: int, final: bool, tagged: bool
    ) -> tuple[list[Event], int]:
        """Read one call object at json_at; the region (marker or separator) starts at region."""
        read = self.read_json(buf, json_at, final)
        if read is None:
            return [], pos
        value, end = read
        self._at_start = self._after_call = False
        if value is INVALID:
            return [buf[pos:region], Malformed(buf[region:end], "call is not valid JSON")], end
        if not tagged and not _is_call(value):
            return [buf[pos:end]], end  # JSON that is the answer, not a call
        try:
            call = call_from_json(value)
        except MalformedCall as exc:
            return [buf[pos:region], Malformed(buf[region:end], str(exc))], end
        self._after_call = True
        return [buf[pos:region], call], end
