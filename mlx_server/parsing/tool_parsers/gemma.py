"""Gemma: FunctionGemma, Gemma 4 native calls, and Gemma 3's prompted ```tool_code``` blocks.

    <start_function_call>call:get_weather{city:<escape>Paris<escape>,days:3}<end_function_call>
    <|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:3}<tool_call|>
    ```tool_code
    get_weather(city="Paris", days=3)
    ```

The native forms write keys bare and wrap every string in a delimiter token, so
values need no escaping; numbers, booleans, lists and nested objects are bare.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from mlx_server.parsing.tool_parsers._python import calls_from_code
from mlx_server.parsing.tool_parsers.base import MalformedCall, ParsedCall, RegionParser
from mlx_server.parsing.types import Tools

_FUNCTION_GEMMA = "<start_function_call>"
_GEMMA4 = "<|tool_call>"
_TOOL_CODE = "```tool_code"
_STRING_DELIMITER = {_FUNCTION_GEMMA: "<escape>", _GEMMA4: '<|"|>'}
_CALL = re.compile(r"\s*call:([\w.\-]+)\s*")
_BARE_KEY = re.compile(r"[^:{}\[\],\s]+")
_BARE_VALUE = re.compile(r"[^,{}\[\]]*")


class GemmaParser(RegionParser):
    name = "gemma"
    regions: ClassVar[Mapping[str, str]] = {
        _FUNCTION_GEMMA: "<end_function_call>",
        _GEMMA4: "<tool_call|>",
        _TOOL_CODE: "```",
    }

    def parse_body(self, start: str, body: str, tools: Tools | None) -> list[ParsedCall]:
        if start == _TOOL_CODE:
            return calls_from_code(body, strip_prefix="default_api.")
        reader = _Reader(body, _STRING_DELIMITER[start])
        calls = []
        while True:
            match = _CALL.match(body, reader.pos)
            if match is None:
                raise MalformedCall("expected call:NAME{...}")
            reader.pos = match.end()
            arguments = reader.value()
            if not isinstance(arguments, dict):
                raise MalformedCall("arguments are not an object")
            calls.append(ParsedCall(match.group(1), arguments))
            reader.skip(" \t\r\n,;")
            if reader.pos == len(body):
                return calls


class _Reader:
    """A recursive-descent reader for Gemma's `{key:value,...}` argument syntax."""

    def __init__(self, text: str, delimiter: str) -> None:
        self.text = text
        self.delimiter = delimiter
        self.pos = 0

    def skip(self, chars: str = " \t\r\n") -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def _fail(self, what: str) -> MalformedCall:
        return MalformedCall(f"{what} at offset {self.pos}")

    def value(self) -> Any:
        self.skip()
        text = self.text
        if text.startswith(self.delimiter, self.pos):
            start = self.pos + len(self.delimiter)
            end = text.find(self.delimiter, start)
            if end == -1:
                raise self._fail("unterminated string")
            self.pos = end + len(self.delimiter)
            return text[start:end]
        if text.startswith("{", self.pos):
            return self._container("}", self._member)
        if text.startswith("[", self.pos):
            return self._container("]", self.value)
        return self._bare()

    def _container(self, close: str, item: Callable[[], Any]) -> Any:
        self.pos += 1
        items: list[Any] = []
        self.skip()
        while not self.text.startswith(close, self.pos):
            items.append(item())
            self.skip()
            if self.text.startswith(",", self.pos):
                self.pos += 1
                self.skip()
            elif not self.text.startswith(close, self.pos):
                raise self._fail(f"expected ',' or {close!r}")
        self.pos += 1
        return dict(items) if close == "}" else items

    def _member(self) -> tuple[str, Any]:
        self.skip()
        if self.text.startswith(self.delimiter, self.pos):
            key = self.value()
        else:
            match = _BARE_KEY.match(self.text, self.pos)
            if match is None:
                raise self._fail("expected a key")
            key, self.pos = match.group().strip("\"'"), match.end()
        self.skip()
        if not self.text.startswith(":", self.pos):
            raise self._fail("expected ':'")
        self.pos += 1
        return key, self.value()

    def _bare(self) -> Any:
        match = _BARE_VALUE.match(self.text, self.pos)
        assert match is not None  # the pattern also matches the empty string
        token = match.group().strip()
        self.pos = match.end()
        if not token:
            raise self._fail("expected a value")
        try:
            return json.loads(token)
        except ValueError:
            return token  # an unquoted word: keep what the model wrote
