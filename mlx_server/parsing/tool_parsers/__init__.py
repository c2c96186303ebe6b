"""Tool-call parsers, registered by name; a parser module is imported only when asked for.

The names are the values of `--tool-call-format`, so renaming one breaks users.
"""

from __future__ import annotations

from functools import cache

from mlx_server.parsing.registry import load_registered
from mlx_server.parsing.tool_parsers.base import ToolCallStream, ToolParser

# name -> "module:class", relative to this package
_REGISTRY = {
    "hermes": "hermes:HermesParser",
    "xml_function": "xml_function:XmlFunctionParser",
    "llama3_json": "llama3_json:Llama3JsonParser",
    "mistral": "mistral:MistralParser",
    "gemma": "gemma:GemmaParser",
    "glm45": "glm45:Glm45Parser",
    "harmony": "harmony:HarmonyParser",
    "deepseek_v31": "deepseek_v31:DeepSeekV31Parser",
    "kimi_k2": "kimi_k2:KimiK2Parser",
    "pythonic": "pythonic:PythonicParser",
}


def tool_parser_names() -> list[str]:
    """Every registered tool-call format name."""
    return sorted(_REGISTRY)


@cache
def get_tool_parser(name: str) -> ToolParser:
    """The parser registered as `name`; raises ValueError naming the choices otherwise."""
    parser: ToolParser = load_registered(__name__, _REGISTRY, name, "tool-call format")
    return parser


__all__ = ["ToolCallStream", "ToolParser", "get_tool_parser", "tool_parser_names"]
