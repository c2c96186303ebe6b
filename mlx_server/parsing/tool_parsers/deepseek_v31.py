"""DeepSeek V3.1 / V3.2-Exp (and the older V3 form) with full-width marker tokens.

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}
    <｜tool▁call▁end｜><｜tool▁calls▁end｜>

V3 wrote `function<｜tool▁sep｜>NAME` and then the arguments in a ```json fence.
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

_SEP = "<｜tool▁sep｜>"
_V3_BODY = re.compile(r"\s*([\w.\-]+)\s*```(?:json)?\s*(.*?)\s*```\s*\Z", re.DOTALL)
_NAME = re.compile(r"[\w.\-]+\Z")


class DeepSeekV31Parser(RegionParser):
    name = "deepseek_v31"
    regions: ClassVar[Mapping[str, str]] = {"<｜tool▁call▁begin｜>": "<｜tool▁call▁end｜>"}
    silent: ClassVar[tuple[str, ...]] = ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>")

    def parse_body(self, start: str, body: str, tools: Tools | None) -> list[ParsedCall]:
        name, sep, args = body.partition(_SEP)
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise MalformedCall("expected NAME<｜tool▁sep｜>ARGUMENTS")
        v3 = _V3_BODY.match(args) if name == "function" else None
        if v3 is not None:
            name, args = v3.group(1), v3.group(2)
        return [ParsedCall(name, arguments_object(json_body(args)))]
