"""Structured outputs and forced tool calls on the real default model (Gemma 3 270M base).

A base model with no tool format still emits valid calls and schema-valid JSON, because
the grammar leaves it no other choice; schemas bound their strings and arrays so that
outputs stay short on a CPU decoding ~6-10 tokens a second.
"""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.e2e

S = {"type": "string", "maxLength": 12}
SCHEMAS = {
    "flat": {"type": "object", "properties": {"name": S, "age": {
        "type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"]},
    "enum": {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}},
             "required": ["color"]},
    "nested": {"type": "object", "properties": {"user": {
        "type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 999},
                                          "email": S}, "required": ["id", "email"]}},
        "required": ["user"]},
    "array": {"type": "object", "properties": {"tags": {
        "type": "array", "items": S, "minItems": 1, "maxItems": 3}}, "required": ["tags"]},
    "bounded_number": {"type": "object", "properties": {"score": {
        "type": "integer", "minimum": -5, "maximum": 5}, "ok": {"type": "boolean"}},
        "required": ["score", "ok"]},
    "optional": {"type": "object", "properties": {"title": S, "subtitle": S},
                 "required": ["title"]},
    "array_of_objects": {"type": "object", "properties": {"items": {
        "type": "array", "maxItems": 2, "items": {
            "type": "object", "properties": {"sku": S, "qty": {
                "type": "integer", "minimum": 1, "maximum": 9}}, "required": ["sku", "qty"]}}},
        "required": ["items"]},
    "nullable": {"type": "object", "properties": {"note": {"anyOf": [S, {"type": "null"}]}},
                 "required": ["note"]},
    "top_level_array": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 4},
    "defs": {"$defs": {"point": {"type": "object", "properties": {
        "x": {"type": "integer", "minimum": 0, "maximum": 9},
        "y": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["x", "y"]}},
        "type": "object", "properties": {"start": {"$ref": "#/$defs/point"},
                                         "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"]},
    "const_and_pattern": {"type": "object", "properties": {
        "kind": {"const": "event"}, "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}},
        "required": ["kind", "date"]},
}
WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 16},
    "unit": {"enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "unit", "days"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "The time in a zone",
                                      "parameters": {"type": "object", "properties": {
                                          "zone": {"type": "string", "maxLength": 16}},
                                          "required": ["zone"]}}},
]


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_output_validates(client, name):
    schema = SCHEMAS[name]
    r = client.chat.completions.create(
        model="m", messages=ask(f"Give an example {name.replace('_', ' ')} as JSON."),
        max_tokens=150, temperature=0,
        response_format={"type": "json_schema",
                         "json_schema": {"name": name, "schema": schema, "strict": True}})
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    jsonschema.validate(json.loads(choice.message.content), schema)


def test_json_object(client):
    r = client.chat.completions.create(
        model="m", messages=ask('Reply with the JSON object {"animal": "cat"}.'), max_tokens=60,
        temperature=0, response_format={"type": "json_object"})
    c = r.choices[0]
    # Any object is allowed, so a base model may repeat keys until max_tokens; what it wrote
    # is still the start of an object, and a finished one parses.
    assert c.message.content.startswith("{")
    if c.finish_reason == "stop":
        assert isinstance(json.loads(c.message.content), dict)


class Pet(BaseModel):
    name: str = Field(max_length=12)
    species: Literal["cat", "dog", "bird"]
    age: int = Field(ge=0, le=30)


def test_sdk_parse_with_pydantic(client):
    r = client.chat.completions.parse(model="m", messages=ask("Invent a pet."), max_tokens=120,
                                      temperature=0, response_format=Pet)
    pet = r.choices[0].message.parsed
    assert isinstance(pet, Pet) and pet.species in ("cat", "dog", "bird")


def test_invalid_schema_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="m", messages=ask("x"), max_tokens=8, response_format={
                "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}})
    assert bad.value.body["param"] == "response_format"
    assert "bogus" in bad.value.body["message"]


@pytest.mark.parametrize("choice", ["required", {"type": "function",
                                                 "function": {"name": "get_weather"}}])
def test_forced_tool_call_validates(client, choice):
    r = client.chat.completions.create(
        model="m", messages=ask("What is the weather in Paris for the next 3 days?"),
        tools=TOOLS, tool_choice=choice, parallel_tool_calls=False, max_tokens=100,
        temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c.message
    (call,) = c.message.tool_calls
    assert call.id and call.type == "function"
    tool = next(t["function"] for t in TOOLS if t["function"]["name"] == call.function.name)
    jsonschema.validate(json.loads(call.function.arguments), tool["parameters"])
    if isinstance(choice, dict):
        assert call.function.name == "get_weather"


def test_forced_tool_calls_stream(client):
    chunks = list(client.chat.completions.create(
        model="m", messages=ask("Time in Tokyo and weather in Oslo?"), tools=TOOLS,
        tool_choice="required", parallel_tool_calls=False, max_tokens=100, temperature=0,
        stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert not "".join(d.content or "" for d in deltas).strip()  # no markup leaks
    calls: dict[int, dict] = {}
    for d in deltas:
        for t in d.tool_calls or []:
            entry = calls.setdefault(t.index, {"name": None, "args": ""})
            if t.function.name:
                entry["name"] = t.function.name
            entry["args"] += t.function.arguments or ""
    assert len(calls) == 1 and chunks[-1].choices[0].finish_reason == "tool_calls"
    for entry in calls.values():
        tool = next(t["function"] for t in TOOLS if t["function"]["name"] == entry["name"])
        jsonschema.validate(json.loads(entry["args"]), tool["parameters"])
