"""Pythonic calls (Llama 3.2/4 pythonic templates, LFM2): a Python list of keyword calls.

    [get_weather(city="Paris", days=3), get_time()]
    <|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>

A bare list counts only at the very start of the output; inside text it is prose.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar

from mlx_server.parsing._text import skip_space
from mlx_server.parsing.tool_parsers._python import calls_from_list
from mlx_server.parsing.tool_parsers.base import (
    Event,
    Malformed,
    ParsedCall,
    RegionParser,
    RegionStream,
    ToolCallStream,
    read_calls,
)
from mlx_server.parsing.types import Tools

_LIST_HEAD = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_LIST_HEAD_PREFIX = re.compile(r"\[\s*(?:[A-Za-z_][\w.]*\s*)?")


class PythonicParser(RegionParser):
    name = "pythonic"
    regions: ClassVar[Mapping[str, str]] = {
        "<|tool_call_start|>": "<|tool_call_end|>",
        "<|python_start|>": "<|python_end|>",
    }

    def parse_body(self, start: str, body: str, tools: Tools | None) -> list[ParsedCall]:
        return calls_from_list(body)

    def stream(self, tools: Tools | None = None) -> ToolCallStream:
        return PythonicStream(self, tools)


class PythonicStream(RegionStream):
    def __init__(self, parser: PythonicParser, tools: Tools | None) -> None:
        super().__init__(parser, tools)
        self._at_start = True

    def step(self, buf: str, pos: int, final: bool) -> tuple[list[Event], int]:
        if self._at_start:
            result = self._bare_list(buf, pos, final)
            if result is not None:
                return result
            self._at_start = False
        return super().step(buf, pos, final)

    def _bare_list(self, buf: str, pos: int, final: bool) -> tuple[list[Event], int] | None:
        """Read a list of calls at the start, wait for one to complete, or None if it is text."""
        q = skip_space(buf, pos)
        if q == len(buf):
            return None if final else ([], pos)
        if _LIST_HEAD.match(buf, q) is None:
            could_grow = not final and _LIST_HEAD_PREFIX.fullmatch(buf, q) is not None
            return ([], pos) if could_grow else None
        end = self._scanner.end(buf, q)
        if end == -1:
            if not final:
                return [], pos
            self._at_start = False
            return [buf[pos:q], Malformed(buf[q:], "unterminated call list")], len(buf)
        self._at_start = False
        source = buf[q:end]
        return [buf[pos:q], *read_calls(lambda: calls_from_list(source), source)], end
