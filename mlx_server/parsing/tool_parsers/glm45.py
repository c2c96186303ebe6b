"""GLM-4.5 / 4.6 / 4.7: the name, then key/value tag pairs.

    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Paris</arg_value>
    </tool_call>

Values are converted to the JSON types the tool's schema declares.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar

from mlx_server.parsing.schema import coerce, tool_properties
from mlx_server.parsing.tool_parsers.base import MalformedCall, ParsedCall, RegionParser
from mlx_server.parsing.types import Tools

_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)
_NAME = re.compile(r"[\w.\-]+\Z")


class Glm45Parser(RegionParser):
    name = "glm45"
    regions: ClassVar[Mapping[str, str]] = {"<tool_call>": "</tool_call>"}

    def parse_body(self, start: str, body: str, tools: Tools | None) -> list[ParsedCall]:
        name, _, rest = body.partition("<arg_key>")
        name = name.strip()
        if not _NAME.match(name):
            raise MalformedCall("expected a function name before the arguments")
        rest = "<arg_key>" + rest if _ else ""
        properties = tool_properties(tools, name)
        arguments = {}
        pos = 0
        for match in _PAIR.finditer(rest):
            if rest[pos : match.start()].strip():
                raise MalformedCall("text between argument pairs")
            key = match.group(1).strip()
            arguments[key] = coerce(match.group(2), properties.get(key))
            pos = match.end()
        if rest[pos:].strip():
            raise MalformedCall("unterminated argument pair")
        return [ParsedCall(name, arguments)]
