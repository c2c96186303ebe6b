"""Reasoning parsers: marker pairs, the prefilled mode, harmony channels, any chunking."""

from __future__ import annotations

import pytest
from hypothesis import given

from mlx_server.parsing import get_reasoning_parser, reasoning_parser_names

from .streaming import chunk, cuts_strategy, examples

MARKERS = {
    "think": ("<think>", "</think>"),
    "mistral": ("[THINK]", "[/THINK]"),
    "gemma": ("<|channel>thought", "<channel|>"),
    "seed_oss": ("<seed:think>", "</seed:think>"),
}

# (name, prefilled, text, reasoning, content)
CASES = [
    ("think", False, "<think>\nPlan the answer.\n</think>\n\nParis.", "Plan the answer.", "Paris."),
    ("think", False, "\n<think>A</think>B", "A", "B"),
    ("think", False, "No thinking here.\n", "", "No thinking here.\n"),
    (
        "think",
        False,
        "<think>Still thinking when the tokens ran out",
        "Still thinking when the tokens ran out",
        "",
    ),
    ("think", False, "<think></think>Empty thought.", "", "Empty thought."),
    # Without the prefilled mode a lone closing tag is text: the opening one never came.
    ("think", False, "Plan.</think>Paris.", "", "Plan.</think>Paris."),
    ("think", False, "Answer with a <think> tag inside.", "", "Answer with a <think> tag inside."),
    ("think", True, "Plan the answer.\n</think>\n\nParis.", "Plan the answer.", "Paris."),
    (
        "think",
        True,
        "<think>\nRepeated opening tag.</think>Paris.",
        "Repeated opening tag.",
        "Paris.",
    ),
    ("think", True, "Unclosed prefilled thought", "Unclosed prefilled thought", ""),
    ("prefilled", False, "Plan.\n</think>\nParis.", "Plan.", "Paris."),
    ("prefilled", False, "", "", ""),
    ("think", False, "<think>Uses </thi in the middle</think>ok", "Uses </thi in the middle", "ok"),
    (
        "think",
        False,
        "<think>multi\n\nline\nthought\n</think>\n\nline one\nline two\n",
        "multi\n\nline\nthought",
        "line one\nline two\n",
    ),
    ("mistral", False, "[THINK]Reason.[/THINK]Answer.", "Reason.", "Answer."),
    ("gemma", False, "<|channel>thought\nReason.<channel|>Answer.", "Reason.", "Answer."),
    ("seed_oss", False, "<seed:think>Reason.</seed:think>Answer.", "Reason.", "Answer."),
    (
        "harmony",
        False,
        "<|channel|>analysis<|message|>Reason.<|end|><|start|>assistant<|channel|>final<|message|>Answer.<|return|>",
        "Reason.",
        "Answer.",
    ),
    (
        "harmony",
        False,
        "<|channel|>analysis<|message|>Cut off mid-thought",
        "Cut off mid-thought",
        "",
    ),
    (
        "harmony",
        False,
        (
            "<|channel|>analysis<|message|>A.<|end|><|start|>assistant<|channel|>analysis"
            "<|message|>B.<|end|><|start|>assistant<|channel|>final<|message|>C."
        ),
        "A.\n\nB.",
        "C.",
    ),
    # Without a tool parser a call message stays as text rather than vanish.
    (
        "harmony",
        False,
        '<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a": 1}<|call|>',
        "",
        '<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a": 1}<|call|>',
    ),
]
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


def test_registry_names() -> None:
    assert set(reasoning_parser_names()) == {*MARKERS, "prefilled", "harmony"}
    with pytest.raises(ValueError, match="think"):
        get_reasoning_parser("nope")


@pytest.mark.parametrize(("name", "prefilled", "text", "reasoning", "content"), CASES, ids=IDS)
def test_parse(name: str, prefilled: bool, text: str, reasoning: str, content: str) -> None:
    assert get_reasoning_parser(name).parse(text, prefilled) == (reasoning, content)


@pytest.mark.parametrize(("name", "prefilled", "text", "reasoning", "content"), CASES, ids=IDS)
@examples(25)
@given(cuts=cuts_strategy)
def test_any_chunking_matches_parse(
    name: str, prefilled: bool, text: str, reasoning: str, content: str, cuts: list[int]
) -> None:
    stream = get_reasoning_parser(name).stream(prefilled)
    got_reasoning = got_content = ""
    for piece in [*chunk(text, cuts), None]:
        r, c = stream.finish() if piece is None else stream.feed(piece)
        got_reasoning += r
        got_content += c
    assert (got_reasoning, got_content) == (reasoning, content)


@pytest.mark.parametrize("name", sorted(MARKERS))
def test_partial_end_marker_is_held_back(name: str) -> None:
    start, end = MARKERS[name]
    stream = get_reasoning_parser(name).stream()
    assert stream.feed(start + "Reason" + end[:-1]) == ("Reason", "")
    assert stream.feed(end[-1:] + "Answer") == ("", "Answer")


def test_partial_start_marker_is_held_back() -> None:
    stream = get_reasoning_parser("think").stream()
    assert stream.feed("<thi") == ("", "")
    assert stream.feed("nk>x") == ("x", "")


@pytest.mark.parametrize(
    ("prompt", "prefilled"),
    [
        ("<|im_start|>assistant\n<think>\n", True),
        ("<｜Assistant｜><think>", True),
        ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False),
        ("<|im_start|>assistant\n", False),
    ],
)
def test_prompt_is_prefilled(prompt: str, prefilled: bool) -> None:
    assert get_reasoning_parser("think").prompt_is_prefilled(prompt) is prefilled
