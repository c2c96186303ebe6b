"""Gemma 4: the thought channel, `<|channel>thought ... <channel|>`."""

from mlx_server.parsing.reasoning.base import MarkerReasoningParser


class GemmaReasoningParser(MarkerReasoningParser):
    name = "gemma"
    start = "<|channel>thought"
    end = "<channel|>"
