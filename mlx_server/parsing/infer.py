"""Picking the tool-call and reasoning formats from a model's chat template (or vocabulary).

The template is the best evidence: it renders past calls the way the model writes
them. The vocabulary is a fallback for unambiguous special tokens only.
"""

from __future__ import annotations

from collections.abc import Collection

# Checked in order: the more specific markers first, since several formats share <tool_call>.
_TOOL_TEMPLATE_MARKERS: list[tuple[str, tuple[str, ...]]] = [
    ("harmony", ("<|channel|>", "<|message|>")),
    ("kimi_k2", ("<|tool_calls_section_begin|>",)),
    ("deepseek_v31", ("<｜tool▁calls▁begin｜>",)),
    ("gemma", ("<start_function_call>",)),
    ("gemma", ("<|tool_call>", "<tool_call|>")),
    ("glm45", ("<arg_key>",)),
    ("xml_function", ("<function=", "<parameter=")),
    ("pythonic", ("<|tool_call_start|>",)),
    ("mistral", ("[TOOL_CALLS]",)),
    ("hermes", ("<tool_call>",)),
    ("llama3_json", ("<|python_tag|>",)),
    ("gemma", ("tool_code",)),
]

_TOOL_VOCAB_MARKERS: list[tuple[str, tuple[str, ...]]] = [
    ("harmony", ("<|channel|>", "<|constrain|>")),
    ("kimi_k2", ("<|tool_calls_section_begin|>",)),
    ("deepseek_v31", ("<｜tool▁calls▁begin｜>",)),
    ("gemma", ("<start_function_call>",)),
    ("gemma", ("<|tool_call>", "<tool_call|>")),
    ("pythonic", ("<|tool_call_start|>", "<|tool_call_end|>")),
    ("mistral", ("[TOOL_CALLS]",)),
]

_REASONING_MARKERS: list[tuple[str, tuple[str, ...]]] = [
    ("harmony", ("<|channel|>",)),
    ("mistral", ("[THINK]",)),
    ("seed_oss", ("<seed:think>",)),
    ("gemma", ("<|channel>",)),
    ("think", ("<think>",)),
    ("think", ("</think>",)),
]


def _first_match(
    text: str | Collection[str] | None, table: list[tuple[str, tuple[str, ...]]]
) -> str | None:
    if not text:
        return None
    for name, markers in table:
        if all(marker in text for marker in markers):
            return name
    return None


def infer_tool_parser(
    chat_template: str | None, vocab_tokens: Collection[str] | None = None
) -> str | None:
    """The tool-call format name the template (or else the vocabulary) points to, or None."""
    return _first_match(chat_template, _TOOL_TEMPLATE_MARKERS) or _first_match(
        vocab_tokens, _TOOL_VOCAB_MARKERS
    )


def infer_reasoning_parser(
    chat_template: str | None, vocab_tokens: Collection[str] | None = None
) -> str | None:
    """The reasoning format name the template (or else the vocabulary) points to, or None.

    For `think` the server still decides per request whether the prompt opened the
    thought: `get_reasoning_parser(name).prompt_is_prefilled(prompt)`.
    """
    return _first_match(chat_template, _REASONING_MARKERS) or _first_match(
        vocab_tokens, _REASONING_MARKERS
    )
