"""Picking formats from chat-template snippets and vocabularies."""

from __future__ import annotations

import pytest

from mlx_server.parsing import infer_reasoning_parser, infer_tool_parser

# Small pieces of the real templates, enough to carry each family's markers.
TEMPLATES = {
    "qwen2.5": (
        '{{- "<tool_call>\\n{\\"name\\": \\"" }}{{- tool_call.name }}{{- "\\", \\"arguments\\": " }}'
        '{{- tool_call.arguments | tojson }}{{- "}\\n</tool_call>" }}'
    ),
    "qwen3-coder": "{{- '<tool_call>\\n<function=' + tool_call.name + '>\\n' }}{{- '<parameter=' + k + '>\\n' }}",
    "glm-4.5": "{{ '<tool_call>' + tc.name }}{% for k, v in tc.arguments.items() %}<arg_key>{{ k }}</arg_key>",
    "llama-3.1": '{{- "<|python_tag|>" + tool_call.name + ".call(" }}{{- \'{"name": "\' + tool_call.name }}',
    "mistral": '{{- "[TOOL_CALLS]" + tool_call.name + "[ARGS]" + arguments }}',
    "functiongemma": "{{- '<start_function_call>call:' + tool_call.function.name + '{' -}}",
    "gemma-4": "{{- '<|tool_call>call:' + function.name + '{' -}}{{- '}<tool_call|>' -}}",
    "gpt-oss": '{{- "<|start|>assistant to=" + "functions." + tc.name + "<|channel|>commentary json<|message|>" }}',
    "deepseek-v3.1": "{{'<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>'+ tool['function']['name'] + '<｜tool▁sep｜>'}}",
    "kimi-k2": "<|tool_calls_section_begin|>{%- for tool_call in message['tool_calls'] -%}<|tool_call_begin|>",
    "lfm2": "{{- '<|tool_call_start|>' + message.content + '<|tool_call_end|>' }}",
    "qwen3": "<tool_call>\\n{{ tool_call | tojson }}\\n</tool_call>{%- if enable_thinking %}<think>\\n\\n</think>",
    "plain": "{% for m in messages %}{{ m.role }}: {{ m.content }}{% endfor %}",
}


@pytest.mark.parametrize(
    ("template", "tool_format"),
    [
        ("qwen2.5", "hermes"),
        ("qwen3", "hermes"),
        ("qwen3-coder", "xml_function"),
        ("glm-4.5", "glm45"),
        ("llama-3.1", "llama3_json"),
        ("mistral", "mistral"),
        ("functiongemma", "gemma"),
        ("gemma-4", "gemma"),
        ("gpt-oss", "harmony"),
        ("deepseek-v3.1", "deepseek_v31"),
        ("kimi-k2", "kimi_k2"),
        ("lfm2", "pythonic"),
        ("plain", None),
    ],
)
def test_tool_format_from_template(template: str, tool_format: str | None) -> None:
    assert infer_tool_parser(TEMPLATES[template], None) == tool_format


def test_tool_format_from_vocab_when_template_is_silent() -> None:
    assert infer_tool_parser(None, {"<|tool_call_start|>", "<|tool_call_end|>"}) == "pythonic"
    assert infer_tool_parser(TEMPLATES["plain"], {"[TOOL_CALLS]", "[ARGS]"}) == "mistral"
    # <tool_call> alone is shared by several formats: no guess.
    assert infer_tool_parser(None, {"<tool_call>", "</tool_call>"}) is None
    assert infer_tool_parser(None, None) is None


@pytest.mark.parametrize(
    ("template", "reasoning_format"),
    [
        ("{% if thinking %}<think>{% endif %}", "think"),
        ("{{ content.split('</think>')[-1] }}", "think"),
        ("<|channel|>analysis<|message|>{{ thinking }}<|end|>", "harmony"),
        ("[THINK]{{ thinking }}[/THINK]", "mistral"),
        ("<seed:think>{{ reasoning }}</seed:think>", "seed_oss"),
        ("<|channel>thought\n{{ thinking }}<channel|>", "gemma"),
        (TEMPLATES["qwen2.5"], None),
    ],
)
def test_reasoning_format_from_template(template: str, reasoning_format: str | None) -> None:
    assert infer_reasoning_parser(template) == reasoning_format


def test_reasoning_format_from_vocab() -> None:
    assert infer_reasoning_parser(None, {"<think>", "</think>"}) == "think"
    assert infer_reasoning_parser("", set()) is None
