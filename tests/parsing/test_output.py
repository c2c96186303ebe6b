"""OutputParser: reasoning first, then tool calls, streamed or whole."""

from __future__ import annotations

import json

from hypothesis import given

from mlx_server.parsing import OutputParser, get_reasoning_parser, get_tool_parser

from .samples import TOOLS
from .streaming import Collected, chunk, cuts_strategy, examples

QWEN3 = (
    '<think>\nI could write <tool_call>{"name": "search", "arguments": {}}</tool_call> '
    "but first I need the weather.\n</think>\n\nChecking.\n<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>'
)


def _qwen3() -> OutputParser:
    return OutputParser(get_reasoning_parser("think"), get_tool_parser("hermes"), TOOLS)


def _stream(parser: OutputParser, chunks: list[str]) -> Collected:
    out = Collected()
    for piece in chunks:
        out.add(parser.feed(piece))
    out.add(parser.finish())
    return out


def test_thinking_text_is_never_parsed_for_calls() -> None:
    reasoning, content, calls, warnings = _qwen3().parse_full(QWEN3)
    assert reasoning.startswith("I could write <tool_call>")
    assert content == "Checking."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "days": 3})
    ]
    assert warnings == []


@examples(50)
@given(cuts=cuts_strategy)
def test_stream_matches_parse_full(cuts: list[int]) -> None:
    whole = _qwen3().parse_full(QWEN3)
    streamed = _stream(_qwen3(), chunk(QWEN3, cuts))
    assert (streamed.reasoning, streamed.content) == (whole.reasoning, whole.content)
    assert streamed.named_calls() == [(c.name, json.loads(c.arguments)) for c in whole.tool_calls]


def test_parse_full_ignores_stream_state() -> None:
    parser = _qwen3()
    parser.feed("<think>half a thought")
    assert parser.parse_full(QWEN3).content == "Checking."


def test_prefilled_prompt() -> None:
    text = "Need weather.</think>" + QWEN3.split("</think>", 1)[1]
    parser = OutputParser(
        get_reasoning_parser("think"), get_tool_parser("hermes"), TOOLS, prefilled=True
    )
    reasoning, content, calls, _ = parser.parse_full(text)
    assert (reasoning, content, len(calls)) == ("Need weather.", "Checking.", 1)


def test_no_tool_parser_leaves_call_markup_as_content() -> None:
    parser = OutputParser(get_reasoning_parser("think"), None)
    _, content, calls, _ = parser.parse_full(QWEN3)
    assert content.startswith("Checking.\n<tool_call>") and calls == []


def test_no_parsers_passes_text_through() -> None:
    assert _stream(OutputParser(None, None), ["a <think>", "b"]).content == "a <think>b"


def test_harmony_tool_parser_reads_its_own_reasoning() -> None:
    text = (
        "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary "
        'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>'
    )
    # The think parser must not swallow anything: harmony replaces it.
    parser = OutputParser(get_reasoning_parser("think"), get_tool_parser("harmony"), TOOLS)
    reasoning, content, calls, _ = parser.parse_full(text)
    assert (reasoning, content, [c.name for c in calls]) == ("Need weather.", "", ["get_weather"])
    streamed = _stream(OutputParser(None, get_tool_parser("harmony"), TOOLS), list(text))
    assert (streamed.reasoning, streamed.named_calls()) == (
        "Need weather.",
        [("get_weather", {"city": "Paris"})],
    )


def test_malformed_call_is_reported_while_streaming() -> None:
    parser = OutputParser(None, get_tool_parser("hermes"), TOOLS)
    streamed = _stream(parser, ["<tool_call>{oops}", "</tool_call>"])
    assert streamed.content == "<tool_call>{oops}</tool_call>"
    assert len(streamed.warnings) == 1 and "hermes" in streamed.warnings[0]
