"""Converting raw XML-style values to the declared JSON types."""

from __future__ import annotations

from typing import Any

import pytest

from mlx_server.parsing.schema import coerce, declared_types, tool_properties


@pytest.mark.parametrize(
    ("raw", "schema", "value"),
    [
        ("3", {"type": "integer"}, 3),
        (" 3.0 ", {"type": "integer"}, 3),
        ("12345678901234567890", {"type": "integer"}, 12345678901234567890),
        ("3.5", {"type": "integer"}, "3.5"),  # does not fit: the tool sees the text
        ("2.5", {"type": "number"}, 2.5),
        ("inf", {"type": "number"}, "inf"),
        ("TRUE", {"type": "boolean"}, True),
        ("yes", {"type": "boolean"}, "yes"),
        ('{"a": [1, 2]}', {"type": "object"}, {"a": [1, 2]}),
        ("{'a': True}", {"type": "object"}, {"a": True}),
        ("[1, 2]", {"type": "array"}, [1, 2]),
        ("[1, 2]", {"type": "string"}, "[1, 2]"),
        ("null", {"type": ["integer", "null"]}, None),
        ("null", {"type": "string"}, "null"),
        ("7", {"anyOf": [{"type": "integer"}, {"type": "string"}]}, 7),
        ("seven", {"anyOf": [{"type": "integer"}, {"type": "string"}]}, "seven"),
        ("a", {"enum": ["a", "b"]}, "a"),
        ("42", None, 42),
        ("Paris", None, "Paris"),
        ('"quoted"', None, '"quoted"'),
        ("  spaced  ", {"type": "string"}, "  spaced  "),
    ],
)
def test_coerce(raw: str, schema: Any, value: Any) -> None:
    assert coerce(raw, schema) == value
    assert type(coerce(raw, schema)) is type(value)


def test_declared_types() -> None:
    assert declared_types({"type": ["string", "null"]}) == {"string", "null"}
    assert declared_types({"oneOf": [{"type": "integer"}, {"enum": [1.5]}]}) == {
        "integer",
        "number",
    }
    assert declared_types("nonsense") == set()


def test_tool_properties_accepts_openai_and_flat_tools() -> None:
    props = {"city": {"type": "string"}}
    openai = [{"type": "function", "function": {"name": "f", "parameters": {"properties": props}}}]
    flat = [{"name": "f", "parameters": {"properties": props}}]
    assert tool_properties(openai, "f") == tool_properties(flat, "f") == props
    assert tool_properties(openai, "g") == {} and tool_properties(None, "f") == {}
