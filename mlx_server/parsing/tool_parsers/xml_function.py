"""Qwen3-Coder / Qwen3.5: XML-ish calls whose values are raw text.

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

Values are converted to the JSON types the tool's schema declares.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from mlx_server.parsing.schema import coerce, tool_properties
from mlx_server.parsing.tool_parsers.base import MalformedCall, ParsedCall, RegionParser
from mlx_server.parsing.types import Tools

_FUNCTION = re.compile(r"<function=([^>\n]+)>")
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>")
# A value ends at its closing tag; models that forget it end it at the next tag.
_VALUE_END = re.compile(r"</parameter>|<parameter=|</function>")


class XmlFunctionParser(RegionParser):
    name = "xml_function"
    regions: ClassVar[Mapping[str, str]] = {"<tool_call>": "</tool_call>"}

    def parse_body(self, start: str, body: str, tools: Tools | None) -> list[ParsedCall]:
        heads = list(_FUNCTION.finditer(body))
        if not heads:
            raise MalformedCall("no <function=NAME> in tool call")
        calls = []
        for i, head in enumerate(heads):
            stop = heads[i + 1].start() if i + 1 < len(heads) else len(body)
            inner = body[head.end() : stop]
            name = head.group(1).strip()
            calls.append(ParsedCall(name, _parameters(inner, tool_properties(tools, name))))
        return calls


def _parameters(inner: str, properties: Any) -> dict[str, Any]:
    inner = inner.split("</function>", 1)[0]
    arguments: dict[str, Any] = {}
    pos = 0
    while (head := _PARAMETER.search(inner, pos)) is not None:
        end = _VALUE_END.search(inner, head.end())
        stop = end.start() if end else len(inner)
        value = inner[head.end() : stop]
        # The template writes each value on its own lines.
        value = value.removeprefix("\n")
        value = value.removesuffix("\n")
        key = head.group(1).strip()
        arguments[key] = coerce(value, properties.get(key))
        pos = end.end() if end and end.group() == "</parameter>" else stop
    return arguments
