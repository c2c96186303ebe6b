"""Kimi K2: calls keyed by the model's own id `functions.NAME:N`.

    <|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0
    <|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>

The model's id is kept as the call id: Kimi's chat template writes the id back verbatim
as the call header, so a made-up `call_...` id would show the model a foreign format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar

from mlx_server.parsing.tool_parsers.base import (
    MalformedCall,
    ParsedCall,
    RegionParser,
    arguments_object,
    json_body,
)
from mlx_server.parsing.types import Tools

_HEADER = re.compile(r"\s*((?:functions\.)?([\w.\-]+?)(?::\d+)?)\s*\Z")
_ARGS = "<|tool_call_argument_begin|>"


class KimiK2Parser(RegionParser):
    name = "kimi_k2"
    regions: ClassVar[Mapping[str, str]] = {"<|tool_call_begin|>": "<|tool_call_end|>"}
    # Some checkpoints write the singular "call_section".
    silent: ClassVar[tuple[str, ...]] = (
        "<|tool_calls_section_begin|>",
        "<|tool_calls_section_end|>",
        "<|tool_call_section_begin|>",
        "<|tool_call_section_end|>",
    )

    def parse_body(self, start: str, body: str, tools: Tools | None) -> list[ParsedCall]:
        header, sep, args = body.partition(_ARGS)
        match = _HEADER.match(header)
        if not sep or match is None:
            raise MalformedCall("expected functions.NAME:N<|tool_call_argument_begin|>")
        model_id = match.group(1) if ":" in match.group(1) else None
        return [ParsedCall(match.group(2), arguments_object(json_body(args)), model_id)]
