"""POST /v1/messages (Anthropic's Messages API) on the fake engine, in-process and through
the official `anthropic` SDK against a real uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging

import anthropic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from mlx_server.config import AppConfig, ServerConfig, ToolConfig
from mlx_server.engine.types import QueueFullError
from mlx_server.server import create_app
from mlx_server.server.turn import matched_stop

from .conftest import LiveServer
from .fake_engine import SCRIPT, FakeEngine
from .named_sse import named_events, types
from .test_disconnect import call_asgi
from .test_tools import CALL, CALL2, WEATHER

MESSAGES = "/v1/messages"
HI = [{"role": "user", "content": "hello there"}]
TOOL = {"name": "get_weather", "description": "Current weather",
        "input_schema": WEATHER["function"]["parameters"]}
TIME_TOOL = {"name": "get_time", "input_schema": {"type": "object"}}
EVENTS = TypeAdapter(RawMessageStreamEvent)


def body(**extra):
    return {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": HI, **extra}


def tools_client(make_client, script, **tool_config):
    engine = FakeEngine(script=script)
    config = AppConfig(tools=ToolConfig(**{"tool_call_format": "hermes", **tool_config}))
    return engine, make_client(engine, config)


def sdk_valid(events):
    """Every event parses as the SDK's type (`ping` has none: the SDK skips it)."""
    for e in events:
        if e["type"] != "ping":
            EVENTS.validate_python(e)


def anthropic_error(r, status):
    assert r.status_code == status, r.text
    out = r.json()
    assert out["type"] == "error" and set(out["error"]) == {"type", "message"}, out
    return out["error"]


# ---------------------------------------------------------------- plain text


async def test_message_shape(client, engine):
    r = await client.post(MESSAGES, json=body(max_tokens=3))
    out = r.json()
    Message.model_validate(out)
    assert out["id"].startswith("msg_") and out["type"] == "message"
    assert out["model"] == "claude-sonnet-4-5"  # the name asked for, as Claude Code expects
    assert out["content"] == [{"type": "text", "text": "the quick brown"}]
    assert out["stop_reason"] == "max_tokens" and out["stop_sequence"] is None
    prompt = len(engine.requests[0].prompt_tokens)
    assert out["usage"] == {"input_tokens": prompt, "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": 0, "output_tokens": 3}


async def test_sampling_and_stop_sequences(client, engine):
    r = await client.post(MESSAGES, json=body(stop_sequences=["fox"], temperature=0.2,
                                              top_p=0.9, top_k=5))
    out = r.json()
    assert out["content"][0]["text"] == "the quick brown "
    assert out["stop_reason"] == "stop_sequence" and out["stop_sequence"] == "fox"
    sampling = engine.requests[0].sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k) == (0.2, 0.9, 5)
    assert sampling.stop == ("fox",) and sampling.max_tokens == 64
    out = (await client.post(MESSAGES, json=body(stop_sequences=["zzz"]))).json()
    assert out["stop_reason"] == "end_turn" and out["stop_sequence"] is None


def test_matched_stop():
    assert matched_stop(" fox", ["zzz", "fox"]) == "fox"
    assert matched_stop("ox.", ["fox"]) == "fox"  # the token completed a stop begun earlier
    assert matched_stop("\n\nHuman", ["\n\nHuman:", "Human"]) == "Human"
    assert matched_stop("<eos>", ["fox", "\n"]) is None


async def test_cache_read_tokens_on_a_second_turn(client):
    first = (await client.post(MESSAGES, json=body(max_tokens=2))).json()
    turns = HI + [{"role": "assistant", "content": "the quick"},
                  {"role": "user", "content": "go on"}]
    second = (await client.post(MESSAGES, json=body(messages=turns, max_tokens=2))).json()
    usage = second["usage"]
    assert usage["cache_read_input_tokens"] >= first["usage"]["input_tokens"] - 1
    assert usage["input_tokens"] > 0


async def test_stream_event_sequence(client, engine):
    r = await client.post(MESSAGES, json=body(max_tokens=3, stream=True))
    assert r.headers["content-type"].startswith("text/event-stream")
    events = named_events(r.text)
    sdk_valid(events)
    assert types(events) == ["message_start", "ping", "content_block_start",
                             "content_block_delta", "content_block_delta",
                             "content_block_delta", "content_block_stop", "message_delta",
                             "message_stop"]
    start = events[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == len(engine.requests[0].prompt_tokens)
    assert "".join(e["delta"]["text"] for e in events[3:6]) == "the quick brown"
    assert events[-2]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert events[-2]["usage"]["output_tokens"] == 3


async def test_count_tokens(client, engine):
    r = await client.post(MESSAGES + "/count_tokens",
                          json={"model": "claude-x", "messages": HI, "system": "be brief"})
    assert r.status_code == 200, r.text
    assert r.json() == {"input_tokens": len(engine.encode("<system> be brief\n<user> hello "
                                                          "there\n<assistant>"))}
    assert engine.requests == []


# ---------------------------------------------------------------- translation


async def test_conversation_reaches_the_template(make_client):
    engine, client = tools_client(make_client, ["ok"])
    turns = [
        {"role": "user", "content": [{"type": "text", "text": "weather?",
                                      "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "use the tool", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "no such city"}]},
            {"type": "text", "text": "thanks"}]},
    ]
    system = [{"type": "text", "text": "You are Claude Code."},
              {"type": "text", "text": "Be terse."}]
    r = await client.post(MESSAGES, json=body(messages=turns, system=system, tools=[TOOL]))
    assert r.status_code == 200, r.text
    render = engine.renders[0]
    assert [m["role"] for m in render["messages"]] == ["system", "user", "assistant", "tool",
                                                       "tool", "user"]
    system_m, _, assistant, tool1, tool2, user = render["messages"]
    assert system_m["content"] == "You are Claude Code.\nBe terse."
    assert assistant["content"] == "Checking." and assistant["reasoning_content"] == "use the tool"
    assert assistant["tool_calls"] == [{"id": "toolu_1", "type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Rome"}}}]
    assert (tool1["tool_call_id"], tool1["content"]) == ("toolu_1", "sunny")
    assert tool2["content"] == "Error:\nno such city" and user["content"] == "thanks"
    assert render["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": TOOL["input_schema"],
        "description": "Current weather"}}]


@pytest.mark.parametrize("choice, grammar_has, template_tools", [
    ({"type": "auto"}, None, True),
    ({"type": "any"}, ["get_weather", "get_time"], True),
    ({"type": "tool", "name": "get_time"}, ["get_time"], True),
    ({"type": "none"}, None, False),
])
async def test_tool_choice(make_client, choice, grammar_has, template_tools):
    engine, client = tools_client(make_client, ["ok"])
    r = await client.post(MESSAGES, json=body(tools=[TOOL, TIME_TOOL], tool_choice=choice))
    assert r.status_code == 200, r.text
    grammar = engine.requests[0].sampling.grammar
    if grammar_has is None:
        assert grammar is None
    else:
        assert all(name in grammar.source for name in grammar_has)
        assert ("get_weather" in grammar.source) == ("get_weather" in grammar_has)
    assert (engine.renders[0]["tools"] is not None) == template_tools


async def test_server_tools_are_ignored_with_a_warning(make_client, caplog):
    engine, client = tools_client(make_client, ["ok"])
    tools = [TOOL, {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]
    with caplog.at_level(logging.WARNING):
        r = await client.post(MESSAGES, json=body(tools=tools, context_management={"x": 1}))
    assert r.status_code == 200, r.text
    assert [t["function"]["name"] for t in engine.renders[0]["tools"]] == ["get_weather"]
    assert "web_search_20250305" in caplog.text and "context_management" in caplog.text


async def test_thinking_config(make_client):
    engine, client = tools_client(make_client, ["ok"], reasoning="think")
    await client.post(MESSAGES, json=body(thinking={"type": "enabled", "budget_tokens": 1024}))
    await client.post(MESSAGES, json=body(thinking={"type": "disabled"}))
    enabled, disabled = engine.requests
    assert enabled.sampling.thought.budget == 1024
    assert engine.renders[0]["template_kwargs"]["enable_thinking"] is True
    assert disabled.sampling.thought.budget == 0
    assert engine.renders[1]["template_kwargs"]["enable_thinking"] is False


async def test_output_format_is_a_grammar(client, engine):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    await client.post(MESSAGES, json=body(output_config={
        "format": {"type": "json_schema", "schema": schema}}))
    grammar = engine.requests[0].sampling.grammar
    assert grammar.kind == "json_schema" and grammar.source["additionalProperties"] is False


# ---------------------------------------------------------------- tool use and thinking out


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_use_and_thinking_blocks(make_client, stream):
    script = ["<think>", "hmm", "</think>", "Let", "me", "check."] + CALL + CALL2
    _, client = tools_client(make_client, script, reasoning="think")
    r = await client.post(MESSAGES, json=body(tools=[TOOL, TIME_TOOL], stream=stream))
    if stream:
        events = named_events(r.text)
        sdk_valid(events)
        blocks = [e["content_block"] for e in events if e["type"] == "content_block_start"]
        for e in events:
            if e["type"] == "content_block_delta":
                block, delta = blocks[e["index"]], e["delta"]
                key = {"thinking_delta": "thinking", "text_delta": "text"}.get(delta["type"])
                if key:
                    block[key] += delta[key]
                else:
                    block["_json"] = block.get("_json", "") + delta["partial_json"]
        for block in blocks:
            if "_json" in block:
                block["input"] = json.loads(block.pop("_json"))
        assert [e["index"] for e in events if e["type"] == "content_block_stop"] == [0, 1, 2, 3]
        stop_reason = events[-2]["delta"]["stop_reason"]
    else:
        out = r.json()
        Message.model_validate(out)
        blocks, stop_reason = out["content"], out["stop_reason"]
    assert [b["type"] for b in blocks] == ["thinking", "text", "tool_use", "tool_use"]
    assert blocks[0]["thinking"] == "hmm" and blocks[1]["text"] == "Let me check."
    assert blocks[2]["name"] == "get_weather" and blocks[2]["input"] == {"city": "Paris"}
    assert blocks[3]["input"] == {} and blocks[2]["id"].startswith("toolu_")
    assert blocks[2]["id"] != blocks[3]["id"]
    assert stop_reason == "tool_use"


async def test_disable_parallel_tool_use(make_client):
    _, client = tools_client(make_client, CALL + CALL2)
    out = (await client.post(MESSAGES, json=body(tools=[TOOL, TIME_TOOL], tool_choice={
        "type": "auto", "disable_parallel_tool_use": True}))).json()
    assert [b["name"] for b in out["content"] if b["type"] == "tool_use"] == ["get_weather"]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("payload, words", [
    ({"model": "c", "messages": HI}, "max_tokens"),
    (body(messages=[]), "messages"),
    (body(temperature=1.5), "temperature"),
    (body(messages=[{"role": "user", "content": [{"type": "document", "source": {
        "type": "text", "media_type": "text/plain", "data": "hi"}}]}]),
     "document"),
    (body(tool_choice={"type": "tool", "name": "nope"}, tools=[TOOL]), "nope"),
])
async def test_invalid_requests(client, payload, words):
    err = anthropic_error(await client.post(MESSAGES, json=payload), 400)
    assert err["type"] == "invalid_request_error" and words in err["message"]


async def test_images_need_a_vision_model(client):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}
    r = await client.post(MESSAGES, json=body(messages=[
        {"role": "user", "content": [image, {"type": "text", "text": "what is it?"}]}]))
    err = anthropic_error(r, 400)
    assert "image" in err["message"]


async def test_other_statuses_in_anthropic_shape(make_client):
    config = AppConfig(server=ServerConfig(api_keys=("sekrit",)))
    async with make_client(FakeEngine(), config) as c:
        err = anthropic_error(await c.post(MESSAGES, json=body()), 401)
        assert err["type"] == "authentication_error"
        r = await c.post(MESSAGES, json=body(max_tokens=1), headers={"x-api-key": "sekrit"})
        assert r.status_code == 200
        err = anthropic_error(await c.get("/v1/messages/nope", headers={"x-api-key": "sekrit"}),
                              404)
        assert err["type"] == "not_found_error"
        chat = await c.post("/v1/chat/completions", json={"messages": HI})
        assert "type" not in chat.json()  # other routes keep OpenAI's shape
    async with make_client(FakeEngine(raise_on_generate=QueueFullError(3))) as c:
        for stream in (False, True):
            r = await c.post(MESSAGES, json=body(stream=stream))
            assert anthropic_error(r, 503)["type"] == "overloaded_error"
            assert r.headers["retry-after"] == "3"


async def test_failure_mid_stream_is_an_error_event(make_client):
    async with make_client(FakeEngine(fail_after=2)) as c:
        r = await c.post(MESSAGES, json=body(stream=True))
    events = named_events(r.text)
    assert types(events)[:2] == ["message_start", "ping"]
    assert events[-1]["type"] == "error" and events[-1]["error"]["type"] == "api_error"
    assert "message_stop" not in types(events)


# ---------------------------------------------------------------- the official SDK


@pytest.fixture(scope="module")
def tools_server():
    config = AppConfig(server=ServerConfig(api_keys=("k1",)),
                       tools=ToolConfig(tool_call_format="hermes", reasoning="think"))
    with LiveServer(config) as server:
        yield server


@pytest.fixture
def sdk(tools_server):
    tools_server.engine = FakeEngine()
    return anthropic.Anthropic(base_url=tools_server.url, api_key="k1", max_retries=0,
                               timeout=5)


def test_sdk_create_and_stream(sdk, tools_server):
    out = sdk.messages.create(model="claude-haiku-4-5", max_tokens=4, messages=HI)
    assert out.content[0].text == "the quick brown fox" and out.stop_reason == "max_tokens"
    with sdk.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == " ".join(SCRIPT) == final.content[0].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == len(SCRIPT)
    assert final.usage.cache_read_input_tokens > 0  # same prompt as the first request
    count = sdk.messages.count_tokens(model="claude-haiku-4-5", messages=HI)
    assert count.input_tokens == final.usage.input_tokens + final.usage.cache_read_input_tokens


def test_sdk_streams_tool_use(sdk, tools_server):
    tools_server.engine = FakeEngine(script=["<think>", "hmm", "</think>"] + CALL)
    with sdk.messages.stream(model="claude-x", max_tokens=100, messages=HI, tools=[TOOL],
                             tool_choice={"type": "any"}) as stream:
        final = stream.get_final_message()
    thinking, call = final.content
    assert thinking.type == "thinking" and thinking.thinking == "hmm"
    assert call.type == "tool_use" and call.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_sdk_errors(sdk, tools_server):
    with pytest.raises(anthropic.BadRequestError) as exc:
        sdk.messages.create(model="c", max_tokens=1, messages=[])
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    bad = anthropic.Anthropic(base_url=tools_server.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="c", max_tokens=1, messages=HI)
    tools_server.engine = FakeEngine(fail_after=1)
    with pytest.raises(anthropic.APIStatusError), sdk.messages.stream(
            model="c", max_tokens=10, messages=HI) as stream:
        stream.get_final_message()


@pytest.mark.parametrize("stream", [False, True])
async def test_disconnect_aborts(stream):
    engine = FakeEngine(script=["w"] * 2000, delay_s=0.005, ctx_size=100_000)
    gone = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, gone.set)
    await call_asgi(create_app(engine, AppConfig()), MESSAGES,
                    body(max_tokens=2000, stream=stream), lambda sent: False, gone)
    assert len(engine.aborted) == 1 and not engine.finished
