"""Tool-call parsers, registered by name; a parser module is imported only when asked for.

The names are the values of `--tool-call-format`, so renaming one breaks users.
"""

from __future__ import annotations

import importlib
from functools import cache

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
    if name not in _REGISTRY:
        raise ValueError(f"unknown tool-call format {name!r}; choose one of {tool_parser_names()}")
    module_name, class_name = _REGISTRY[name].split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    parser: ToolParser = getattr(module, class_name)()
    return parser


__all__ = ["ToolCallStream", "ToolParser", "get_tool_parser", "tool_parser_names"]
