"""Reasoning parsers, registered by name; a parser module is imported only when asked for.

The names are the values of `--reasoning-format`, so renaming one breaks users.
"""

from __future__ import annotations

import importlib
from functools import cache

from mlx_server.parsing.reasoning.base import ReasoningParser, ReasoningStream

# name -> "module:class", relative to this package
_REGISTRY = {
    "think": "think:ThinkParser",
    "prefilled": "think:PrefilledThinkParser",
    "harmony": "harmony:HarmonyReasoningParser",
    "mistral": "mistral:MistralReasoningParser",
    "gemma": "gemma:GemmaReasoningParser",
    "seed_oss": "seed_oss:SeedOssReasoningParser",
}


def reasoning_parser_names() -> list[str]:
    """Every registered reasoning format name."""
    return sorted(_REGISTRY)


@cache
def get_reasoning_parser(name: str) -> ReasoningParser:
    """The parser registered as `name`; raises ValueError naming the choices otherwise."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown reasoning format {name!r}; choose one of {reasoning_parser_names()}"
        )
    module_name, class_name = _REGISTRY[name].split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    parser: ReasoningParser = getattr(module, class_name)()
    return parser


__all__ = ["ReasoningParser", "ReasoningStream", "get_reasoning_parser", "reasoning_parser_names"]
