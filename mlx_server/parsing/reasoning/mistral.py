"""Magistral: `[THINK]...[/THINK]`."""

from mlx_server.parsing.reasoning.base import MarkerReasoningParser


class MistralReasoningParser(MarkerReasoningParser):
    name = "mistral"
    start = "[THINK]"
    end = "[/THINK]"
