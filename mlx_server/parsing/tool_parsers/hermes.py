"""Hermes / Qwen2.5 / Qwen3: JSON calls inside <tool_call>...</tool_call>.

<tool_call>
{"name": "get_weather", "arguments": {"city": "Paris"}}
</tool_call>
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from mlx_server.parsing.tool_parsers.base import (
    ParsedCall,
    RegionParser,
    call_from_json,
    json_body,
)
from mlx_server.parsing.types import Tools


class HermesParser(RegionParser):
    name = "hermes"
    regions: ClassVar[Mapping[str, str]] = {"<tool_call>": "</tool_call>"}

    def parse_body(self, start: str, body: str, tools: Tools | None) -> list[ParsedCall]:
        value = json_body(body)
        # A few fine-tunes put a list of calls in one block.
        return (
            [call_from_json(v) for v in value]
            if isinstance(value, list)
            else [call_from_json(value)]
        )
