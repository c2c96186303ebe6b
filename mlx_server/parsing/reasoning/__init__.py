"""Reasoning parsers, registered by name; a parser module is imported only when asked for.

The names are the values of `--reasoning-format`, so renaming one breaks users.
"""

from __future__ import annotations

from functools import cache

from mlx_server.parsing.reasoning.base import ReasoningParser, ReasoningStream
from mlx_server.parsing.registry import load_registered

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
    parser: ReasoningParser = load_registered(__name__, _REGISTRY, name, "reasoning format")
    return parser


__all__ = ["ReasoningParser", "ReasoningStream", "get_reasoning_parser", "reasoning_parser_names"]
