"""`<think>...</think>`: Qwen3, QwQ, DeepSeek-R1, GLM-4.5, MiniMax-M2 and most open reasoners."""

from mlx_server.parsing.reasoning.base import MarkerReasoningParser


class ThinkParser(MarkerReasoningParser):
    name = "think"
    start = "<think>"
    end = "</think>"


class PrefilledThinkParser(ThinkParser):
    """The chat template ends the prompt with `<think>`, so output starts inside the thought."""

    name = "prefilled"
    always_prefilled = True
