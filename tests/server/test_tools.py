"""Tool calls, structured outputs and reasoning through the chat route, on the fake engine."""

from __future__ import annotations

import json
import logging

import openai.types.chat as oai
import pytest

from mlx_server.config import AppConfig, ToolConfig
from mlx_server.engine.types import ModelInfo

from .conftest import CHAT, USER_HI, assert_schema, sse_payloads
from .fake_engine import FakeEngine

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
CALL = ['<tool_call>', '{"name":', '"get_weather",', '"arguments":', '{"city":', '"Paris"}}',
        '</tool_call>']
CALL2 = ['<tool_call>', '{"name":', '"get_time",', '"arguments":', '{}}', '</tool_call>']


def tools_client(make_client, script, **tool_config):
    engine = FakeEngine(script=script)
    config = AppConfig(tools=ToolConfig(**{"tool_call_format": "hermes", **tool_config}))
    return engine, make_client(engine, config)


async def test_tool_call_response(make_client):
    engine, client = tools_client(make_client, ["Let", "me", "check."] + CALL)
    r = await client.post(CHAT, json={"messages": USER_HI, "tools": [WEATHER]})
    body = r.json()
    assert_schema("CreateChatCompletionResponse", body)
    oai.ChatCompletion.model_validate(body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert engine.renders[0]["tools"] == [WEATHER]


async def test_parallel_calls_and_parallel_false(make_client):
    engine, client = tools_client(make_client, CALL + CALL2)
    body = (await client.post(CHAT, json={"messages": USER_HI, "tools": [WEATHER, TIME]})).json()
    calls = body["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert len({c["id"] for c in calls}) == 2
    body = (await client.post(CHAT, json={"messages": USER_HI, "tools": [WEATHER, TIME],
                                          "parallel_tool_calls": False})).json()
    assert [c["function"]["name"] for c in body["choices"][0]["message"]["tool_calls"]] == [
        "get_weather"]


async def test_streamed_tool_call_deltas(make_client):
    _, client = tools_client(make_client, ["Hi."] + CALL + CALL2)
    r = await client.post(CHAT, json={"messages": USER_HI, "tools": [WEATHER, TIME],
                                      "stream": True})
    chunks = sse_payloads(r.text)
    for c in chunks:
        oai.ChatCompletionChunk.model_validate(c)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    content = "".join(d.get("content") or "" for d in deltas)
    assert content == "Hi." and "<tool_call>" not in content
    tool_deltas = [t for d in deltas for t in d.get("tool_calls") or []]
    first = [t for t in tool_deltas if "id" in t]
    assert [(t["index"], t["type"], t["function"]["name"]) for t in first] == [
        (0, "function", "get_weather"), (1, "function", "get_time")]
    args = ["".join(t["function"]["arguments"] for t in tool_deltas if t["index"] == i)
            for i in (0, 1)]
    assert [json.loads(a) for a in args] == [{"city": "Paris"}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_malformed_call_is_content_with_a_warning(make_client, caplog):
    _, client = tools_client(make_client, ["<tool_call>", "{oops", "</tool_call>"])
    with caplog.at_level(logging.WARNING):
        body = (await client.post(CHAT, json={"messages": USER_HI, "tools": [WEATHER]})).json()
    message = body["choices"][0]["message"]
    assert message["content"] == "<tool_call> {oops </tool_call>"
    assert "tool_calls" not in message and body["choices"][0]["finish_reason"] == "stop"
    assert any("malformed tool call" in rec.getMessage() for rec in caplog.records)


async def test_tool_choice_none_hides_tools_and_parses_nothing(make_client):
    engine, client = tools_client(make_client, CALL)
    body = (await client.post(CHAT, json={"messages": USER_HI, "tools": [WEATHER],
                                          "tool_choice": "none"})).json()
    assert engine.renders[0]["tools"] is None
    assert body["choices"][0]["message"]["content"].startswith("<tool_call>")


async def test_required_and_named_choice_are_grammars(make_client):
    engine, client = tools_client(make_client, CALL)
    await client.post(CHAT, json={"messages": USER_HI, "tools": [WEATHER, TIME],
                                  "tool_choice": "required"})
    grammar = engine.requests[0].sampling.grammar
    assert grammar.kind == "lark" and "get_weather" in grammar.source
    assert "get_time" in grammar.source and ")*" in grammar.source  # parallel calls allowed
    await client.post(CHAT, json={"messages": USER_HI, "tools": [WEATHER, TIME],
                                  "tool_choice": {"type": "function",
                                                  "function": {"name": "get_time"}}})
    grammar = engine.requests[1].sampling.grammar
    assert "get_time" in grammar.source and "get_weather" not in grammar.source


@pytest.mark.parametrize("extra, param", [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
])
async def test_bad_tool_choice_and_format(client, extra, param):
    r = await client.post(CHAT, json={"messages": USER_HI, **extra})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_response_format_grammars(client, engine):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    await client.post(CHAT, json={"messages": USER_HI, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}})
    await client.post(CHAT, json={"messages": USER_HI, "response_format": {"type": "json_object"}})
    await client.post(CHAT, json={"messages": USER_HI, "response_format": {"type": "text"}})
    grammars = [r.sampling.grammar for r in engine.requests]
    assert grammars[0].kind == "json_schema"
    assert grammars[0].source == {**schema, "additionalProperties": False}  # strict closes it
    assert grammars[1].source == {"type": "object"} and grammars[2] is None


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_split(make_client, stream):
    _, client = tools_client(make_client, ["<think>", "hmm,", "sure", "</think>", "Paris."]
                             + CALL, reasoning="think", mirror_reasoning=True)
    r = await client.post(CHAT, json={"messages": USER_HI, "tools": [WEATHER], "stream": stream})
    if stream:
        deltas = [c["choices"][0]["delta"] for c in sse_payloads(r.text) if c["choices"]]
        message = {k: "".join(d.get(k) or "" for d in deltas)
                   for k in ("content", "reasoning_content", "reasoning")}
        calls = [t for d in deltas for t in d.get("tool_calls") or []]
    else:
        message = r.json()["choices"][0]["message"]
        calls = message["tool_calls"]
    assert message["reasoning_content"] == message["reasoning"] == "hmm, sure"
    assert message["content"] == "Paris."
    assert calls[0]["function"]["name"] == "get_weather"


async def test_thinking_is_never_parsed_for_calls(make_client):
    _, client = tools_client(make_client, ["<think>"] + CALL + ["</think>", "no."],
                             reasoning="think")
    body = (await client.post(CHAT, json={"messages": USER_HI, "tools": [WEATHER]})).json()
    message = body["choices"][0]["message"]
    assert "tool_calls" not in message and message["content"] == "no."
    assert message["reasoning_content"].startswith("<tool_call>")


async def test_reasoning_off_keeps_the_thought_in_content(make_client):
    _, client = tools_client(make_client, ["<think>", "x", "</think>", "y"], reasoning="off")
    body = (await client.post(CHAT, json={"messages": USER_HI})).json()
    assert body["choices"][0]["message"]["content"] == "<think> x </think> y"


async def test_budget_and_grammar_set_thought_control(make_client):
    engine, client = tools_client(make_client, ["x"], reasoning="think", reasoning_budget=7)
    await client.post(CHAT, json={"messages": USER_HI})
    thought = engine.requests[0].sampling.thought
    assert thought.budget == 7 and not thought.prefilled
    assert thought.start_ids == tuple(engine.encode("<think>"))


async def test_input_reasoning_and_template_kwargs_reach_the_template(make_client):
    engine, client = tools_client(make_client, ["x"], chat_template_kwargs={"a": 1})
    messages = [{"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "reasoning": "why"},
                {"role": "user", "content": "q2"}]
    await client.post(CHAT, json={"messages": messages, "reasoning_effort": "low",
                                  "chat_template_kwargs": {"enable_thinking": False}})
    render = engine.renders[0]
    assert render["messages"][1]["reasoning_content"] == "why"
    assert render["template_kwargs"] == {"a": 1, "enable_thinking": False,
                                         "reasoning_effort": "low"}


class PlainTemplateEngine(FakeEngine):
    """A model whose template knows nothing of tools (like Gemma 3)."""

    @property
    def model_info(self) -> ModelInfo:
        info = super().model_info
        return ModelInfo(**{**info.__dict__, "chat_template": "{{ messages }}"})


async def test_template_without_tools_gets_them_in_a_system_message(make_client):
    engine = PlainTemplateEngine(script=['{"name":', '"get_weather",', '"arguments":',
                                         '{"city":', '"Oslo"}}'])
    client = make_client(engine, AppConfig())
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {"role": "user", "content": "and Oslo?"}]
    body = (await client.post(CHAT, json={"messages": messages, "tools": [WEATHER],
                                          "tool_choice": "required"})).json()
    render = engine.renders[0]
    assert render["tools"] is None
    roles = [m["role"] for m in render["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert "get_weather" in render["messages"][0]["content"]
    assert json.loads(render["messages"][2]["content"]) == {
        "name": "get_weather", "arguments": {"city": "Rome"}}
    assert "sunny" in render["messages"][3]["content"]
    assert "Oslo" in render["messages"][3]["content"]
    assert '"arguments"' in engine.requests[0].sampling.grammar.source
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert body["choices"][0]["finish_reason"] == "tool_calls"
