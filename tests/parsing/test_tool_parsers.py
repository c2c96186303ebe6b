"""The conformance suite every registered tool-call format must pass."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlx_server.parsing import ParseResult, get_tool_parser, tool_parser_names

from .samples import SAMPLES, TOOLS, Sample
from .streaming import Collected, chunk, cuts_strategy, examples

CASES = [(name, sample) for name, samples in SAMPLES.items() for sample in samples]
CASE_IDS = [f"{name}-{sample.id}" for name, sample in CASES]
STANDARD = {"no_calls", "one_call", "parallel", "text_around", "unicode_nested", "malformed"}

_ID_PATTERNS = {
    "mistral": re.compile(r"[A-Za-z0-9]{9}"),
    "kimi_k2": re.compile(r"functions\.[\w.\-]+:\d+"),
}
_DEFAULT_ID = re.compile(r"call_[A-Za-z0-9]{24}")


def _named(result: ParseResult) -> list[tuple[str, object]]:
    return [(c.name, json.loads(c.arguments)) for c in result.tool_calls]


def _stream(name: str, chunks: list[str]) -> Collected:
    stream = get_tool_parser(name).stream(TOOLS)
    out = Collected()
    for piece in chunks:
        out.add(stream.feed(piece))
    out.add(stream.finish())
    return out


def _assert_stream_matches_parse(name: str, text: str, chunks: list[str]) -> None:
    assert "".join(chunks) == text
    whole = get_tool_parser(name).parse(text, TOOLS)
    streamed = _stream(name, chunks)
    assert streamed.content == whole.content
    assert streamed.reasoning == whole.reasoning
    assert streamed.named_calls() == _named(whole)
    assert len(streamed.warnings) == len(whole.warnings)


def test_every_registered_parser_has_samples() -> None:
    assert sorted(SAMPLES) == tool_parser_names()
    for name, samples in SAMPLES.items():
        assert {s.id for s in samples} >= STANDARD, name


@pytest.mark.parametrize(("name", "sample"), CASES, ids=CASE_IDS)
def test_parse(name: str, sample: Sample) -> None:
    result = get_tool_parser(name).parse(sample.text, TOOLS)
    assert result.content == sample.content
    assert _named(result) == sample.calls
    assert result.reasoning == sample.reasoning
    assert bool(result.warnings) == sample.malformed, result.warnings
    for call in result.tool_calls:
        assert isinstance(json.loads(call.arguments), dict)


@pytest.mark.parametrize(("name", "sample"), CASES, ids=CASE_IDS)
def test_call_ids(name: str, sample: Sample) -> None:
    ids = [c.id for c in get_tool_parser(name).parse(sample.text, TOOLS).tool_calls]
    assert len(set(ids)) == len(ids)
    if sample.ids is not None:
        assert ids == sample.ids
    for call_id in ids:
        assert _ID_PATTERNS.get(name, _DEFAULT_ID).fullmatch(call_id), call_id


@pytest.mark.parametrize(("name", "sample"), CASES, ids=CASE_IDS)
def test_one_char_chunks(name: str, sample: Sample) -> None:
    _assert_stream_matches_parse(name, sample.text, list(sample.text))


@pytest.mark.parametrize(("name", "sample"), CASES, ids=CASE_IDS)
@examples(15)
@given(cuts=cuts_strategy)
def test_any_chunking_matches_parse(name: str, sample: Sample, cuts: list[int]) -> None:
    _assert_stream_matches_parse(name, sample.text, chunk(sample.text, cuts))


@pytest.mark.parametrize("name", tool_parser_names())
def test_calls_arrive_whole_in_one_delta(name: str) -> None:
    sample = next(s for s in SAMPLES[name] if s.id == "parallel")
    stream = get_tool_parser(name).stream(TOOLS)
    deltas = [stream.feed(sample.text), stream.finish()]
    calls = [d for delta in deltas for d in delta.tool_calls]
    assert [d.index for d in calls] == [0, 1]
    assert all(d.id and d.name and json.loads(d.arguments_fragment) for d in calls)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("hermes", "Hello <tool_c"),
        ("xml_function", "Hello <tool_call"),
        ("llama3_json", "Hello <|python_t"),
        ("mistral", "Hello [TOOL_CA"),
        ("gemma", "Hello <start_function"),
        ("glm45", "Hello <tool_"),
        ("harmony", "Hello <|chan"),
        ("deepseek_v31", "Hello <｜tool▁calls"),
        ("kimi_k2", "Hello <|tool_calls_sec"),
        ("pythonic", "Hello <|tool_call_st"),
    ],
)
def test_partial_marker_is_held_back(name: str, text: str) -> None:
    stream = get_tool_parser(name).stream(TOOLS)
    assert stream.feed(text).content == "Hello"
    # If the marker never completes it was text after all.
    assert stream.finish().content == text.removeprefix("Hello")


@pytest.mark.parametrize("name", tool_parser_names())
def test_plain_text_passes_through_unchanged(name: str) -> None:
    text = "  Line one,\n\tline two {with braces} and [brackets] (parens) — ünïcødé 🙂  \n"
    assert get_tool_parser(name).parse(text, TOOLS) == ParseResult(content=text)


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="hermes"):
        get_tool_parser("nope")


# Pieces of every format, so random texts hit markers, half markers and broken bodies.
_PIECES = [
    "<tool_call>",
    "</tool_call>",
    "<tool_c",
    "{",
    "}",
    "[",
    "]",
    '"name"',
    ": ",
    '"get_weather"',
    ", ",
    '"arguments"',
    '"parameters"',
    '{"city": "Paris"}',
    "<function=get_weather>",
    "<parameter=city>",
    "</parameter>",
    "</function>",
    "<|python_tag|>",
    ";",
    "[TOOL_CALLS]",
    "get_weather",
    "[ARGS]",
    "<start_function_call>",
    "call:get_weather",
    "<escape>",
    "<end_function_call>",
    "<|tool_call>",
    "<tool_call|>",
    '<|"|>',
    "```tool_code\n",
    "```",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    "<|start|>",
    "assistant",
    "<|channel|>",
    "analysis",
    "final",
    " to=functions.get_weather",
    "<|message|>",
    "<|end|>",
    "<|call|>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁sep｜>",
    "<｜tool▁call▁end｜>",
    "<|tool_calls_section_begin|>",
    "<|tool_call_begin|>",
    "functions.get_weather:0",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
    "<|tool_call_start|>",
    "<|tool_call_end|>",
    "get_weather(",
    ")",
    "city=",
    '"Paris"',
    "'",
    '"',
    "\\",
    " ",
    "\n",
    "Paris",
    "é東🙂",
    "true",
    "3",
]


@pytest.mark.parametrize("name", tool_parser_names())
@examples(60)
@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=25), cuts=cuts_strategy)
def test_random_marker_soup_never_fails(name: str, pieces: list[str], cuts: list[int]) -> None:
    text = "".join(pieces)
    result = get_tool_parser(name).parse(text, TOOLS)
    assert not any("parser error" in w for w in result.warnings), result.warnings
    for call in result.tool_calls:
        assert isinstance(json.loads(call.arguments), dict)
    _assert_stream_matches_parse(name, text, chunk(text, cuts))
