"""POST /v1/responses (OpenAI's Responses API) on the fake engine, in-process and through the
official `openai` SDK against a real uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging

import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from mlx_server.config import AppConfig, ToolConfig
from mlx_server.server import create_app
from mlx_server.server.responses.protocol import ResponseObject
from mlx_server.server.responses.store import ResponseStore, StoredResponse

from .conftest import LiveServer
from .fake_engine import SCRIPT, FakeEngine
from .named_sse import named_events, types
from .test_disconnect import call_asgi
from .test_tools import CALL, CALL2

RESPONSES = "/v1/responses"
FN = {"type": "function", "name": "get_weather", "description": "Current weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]}}
FN_TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}
EVENTS = TypeAdapter(ResponseStreamEvent)


def tools_client(make_client, script, **tool_config):
    engine = FakeEngine(script=script)
    config = AppConfig(tools=ToolConfig(**{"tool_call_format": "hermes", **tool_config}))
    return engine, make_client(engine, config)


def sdk_valid(events):
    for e in events:
        EVENTS.validate_python(e)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


# ---------------------------------------------------------------- plain text


async def test_response_shape(client, engine):
    r = await client.post(RESPONSES, json={"model": "gpt-5", "input": "hello there",
                                           "instructions": "be brief", "max_output_tokens": 3})
    assert r.status_code == 200, r.text
    out = r.json()
    parsed = Response.model_validate(out)
    assert parsed.output_text == "the quick brown"
    assert out["id"].startswith("resp_") and out["object"] == "response"
    assert out["model"] == "gpt-5" and out["store"] is False
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": "max_output_tokens"}
    (message,) = out["output"]
    assert message["id"].startswith("msg_") and message["role"] == "assistant"
    prompt = len(engine.requests[0].prompt_tokens)
    assert out["usage"]["input_tokens"] == prompt and out["usage"]["output_tokens"] == 3
    assert out["usage"]["total_tokens"] == prompt + 3
    assert [m["role"] for m in engine.renders[0]["messages"]] == ["system", "user"]


async def test_stream_event_sequence(client):
    r = await client.post(RESPONSES, json={"input": "hi", "stream": True,
                                           "max_output_tokens": 2})
    events = named_events(r.text)
    sdk_valid(events)
    assert types(events) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.incomplete"]
    item_id = events[2]["item"]["id"]
    assert all(e["item_id"] == item_id for e in events[3:8])
    assert events[6]["text"] == "the quick"
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "the quick"
    assert final["usage"]["output_tokens"] == 2
    r = await client.post(RESPONSES, json={"input": "hi", "stream": True})
    assert named_events(r.text)[-1]["type"] == "response.completed"


# ---------------------------------------------------------------- tools and reasoning


@pytest.mark.parametrize("stream", [False, True])
async def test_function_calls_and_reasoning(make_client, stream):
    script = ["<think>", "hmm", "</think>", "Checking."] + CALL + CALL2
    _, client = tools_client(make_client, script, reasoning="think")
    r = await client.post(RESPONSES, json={"input": "weather?", "tools": [FN, FN_TIME],
                                           "stream": stream})
    if stream:
        events = named_events(r.text)
        sdk_valid(events)
        args = "".join(e["delta"] for e in events
                       if e["type"] == "response.function_call_arguments.delta"
                       and e["output_index"] == 2)
        assert json.loads(args) == {"city": "Paris"}
        reasoning = "".join(e["delta"] for e in events
                            if e["type"] == "response.reasoning_text.delta")
        assert reasoning == "hmm"
        done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
        assert [(e["name"], e["output_index"]) for e in done] == [
            ("get_weather", 2), ("get_time", 3)]
        out = events[-1]["response"]
    else:
        out = r.json()
    Response.model_validate(out)
    assert out["status"] == "completed"
    kinds = [item["type"] for item in out["output"]]
    assert kinds == ["reasoning", "message", "function_call", "function_call"]
    reasoning, message, call, call2 = out["output"]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "hmm"}]
    assert message["content"][0]["text"] == "Checking."
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert call["call_id"].startswith("call_") and call["id"].startswith("fc_")
    assert call2["name"] == "get_time" and call["call_id"] != call2["call_id"]
    assert out["tools"][0]["name"] == "get_weather"


async def test_input_items_reach_the_template(make_client):
    engine, client = tools_client(make_client, ["ok"])
    items = [
        {"role": "developer", "content": "AGENTS.md says hi"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ls"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [],
         "content": [{"type": "reasoning_text", "text": "run it"}]},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "Running.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Rome"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"role": "user", "content": "thanks"},
    ]
    r = await client.post(RESPONSES, json={"input": items, "instructions": "You are Codex.",
                                           "tools": [FN], "reasoning": {"effort": "high"}})
    assert r.status_code == 200, r.text
    render = engine.renders[0]
    assert [m["role"] for m in render["messages"]] == ["system", "system", "user", "assistant",
                                                       "tool", "user"]
    assistant = render["messages"][3]
    assert assistant["reasoning_content"] == "run it" and assistant["content"] == "Running."
    assert assistant["tool_calls"] == [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Rome"}}}]
    assert render["messages"][4] == {"role": "tool", "content": "sunny",
                                     "tool_call_id": "call_1"}
    assert render["template_kwargs"]["reasoning_effort"] == "high"
    assert render["tools"][0]["function"]["name"] == "get_weather"


async def test_tool_choice_and_text_format(make_client):
    engine, client = tools_client(make_client, ["ok"])
    await client.post(RESPONSES, json={"input": "x", "tools": [FN, FN_TIME],
                                       "tool_choice": "required"})
    await client.post(RESPONSES, json={"input": "x", "tools": [FN, FN_TIME],
                                       "tool_choice": {"type": "function", "name": "get_time"}})
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    await client.post(RESPONSES, json={"input": "x", "text": {"format": {
        "type": "json_schema", "name": "a", "schema": schema, "strict": True}}})
    required, named, structured = [r.sampling.grammar for r in engine.requests]
    assert "get_weather" in required.source and "get_time" in required.source
    assert "get_time" in named.source and "get_weather" not in named.source
    assert structured.kind == "json_schema" and structured.source["additionalProperties"] is False


async def test_hosted_tools_are_ignored_with_a_warning(make_client, caplog):
    engine, client = tools_client(make_client, ["ok"])
    tools = [FN, {"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["v"]}]
    with caplog.at_level(logging.WARNING):
        r = await client.post(RESPONSES, json={"input": "x", "tools": tools,
                                               "include": ["reasoning.encrypted_content"],
                                               "prompt_cache_key": "k", "brand_new_field": 1})
    assert r.status_code == 200, r.text
    assert [t["function"]["name"] for t in engine.renders[0]["tools"]] == ["get_weather"]
    assert "web_search" in caplog.text and "file_search" in caplog.text
    assert "brand_new_field" in caplog.text
    assert r.json()["tools"] == [{**FN, "strict": None}]


# ---------------------------------------------------------------- state


async def test_store_and_previous_response_id(client, engine):
    first = (await client.post(RESPONSES, json={"input": "hello there", "store": True,
                                                "instructions": "be brief",
                                                "max_output_tokens": 2})).json()
    assert first["store"] is True
    got = await client.get(f"{RESPONSES}/{first['id']}")
    assert got.status_code == 200 and got.json() == first
    second = (await client.post(RESPONSES, json={"input": "go on", "max_output_tokens": 2,
                                                 "previous_response_id": first["id"]})).json()
    assert second["previous_response_id"] == first["id"]
    roles = [(m["role"], m["content"]) for m in engine.renders[1]["messages"]]
    # The earlier turn and its output come back; its instructions do not.
    assert roles == [("user", "hello there"), ("assistant", "the quick"), ("user", "go on")]
    assert (await client.get(f"{RESPONSES}/{second['id']}")).status_code == 404  # not stored
    deleted = await client.delete(f"{RESPONSES}/{first['id']}")
    assert deleted.json() == {"id": first["id"], "object": "response.deleted", "deleted": True}
    r = await client.post(RESPONSES, json={"input": "x", "previous_response_id": first["id"]})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "previous_response_id" and "store" in error["message"]
    assert error["code"] == "previous_response_not_found"


async def test_streamed_response_is_stored(client, engine):
    r = await client.post(RESPONSES, json={"input": "hi", "store": True, "stream": True})
    final = named_events(r.text)[-1]["response"]
    got = (await client.get(f"{RESPONSES}/{final['id']}")).json()
    assert got["output"] == final["output"] and got["status"] == "completed"


def test_store_is_a_bounded_lru():
    store = ResponseStore(capacity=2)

    def put(rid):
        store.put(StoredResponse(ResponseObject(id=rid, created_at=0, status="completed",
                                                model="m"), []))

    put("a"), put("b")
    assert store.get("a") is not None  # now the most recent
    put("c")
    assert store.get("b") is None and store.get("a") is not None and len(store) == 2


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("payload, param", [
    ({}, "input"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input.0.type"),
    ({"input": "x", "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}},
     "tool_choice"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url":
                                              "data:image/png;base64,iVBORw0KGgo="}]}]},
     "input"),
    ({"input": "x", "temperature": 3}, "temperature"),
])
async def test_invalid_requests(client, payload, param):
    r = await client.post(RESPONSES, json=payload)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_failure_mid_stream_is_response_failed(make_client):
    async with make_client(FakeEngine(fail_after=2)) as c:
        r = await c.post(RESPONSES, json={"input": "hi", "stream": True})
    events = named_events(r.text)
    sdk_valid(events)
    failed = events[-1]
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "server_error"


# ---------------------------------------------------------------- the official SDK


@pytest.fixture(scope="module")
def tools_server():
    config = AppConfig(tools=ToolConfig(tool_call_format="hermes", reasoning="think"))
    with LiveServer(config) as server:
        yield server


@pytest.fixture
def sdk(tools_server):
    tools_server.engine = FakeEngine()
    return openai.OpenAI(base_url=tools_server.url + "/v1", api_key="unused", max_retries=0,
                         timeout=5)


def test_sdk_create_stream_and_previous(sdk):
    first = sdk.responses.create(model="gpt-5-codex", input="hello there", store=True)
    assert first.output_text == " ".join(SCRIPT) and first.status == "completed"
    with sdk.responses.stream(model="gpt-5-codex", input="and then?",
                              previous_response_id=first.id) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == " ".join(SCRIPT)
    assert final.usage.input_tokens_details.cached_tokens > 0  # the first turn's prompt
    assert sdk.responses.retrieve(first.id).id == first.id
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="m", input="x", previous_response_id="resp_nope")


def test_sdk_function_call_round_trip(sdk, tools_server):
    tools_server.engine = FakeEngine(script=["<think>", "hmm", "</think>"] + CALL)
    with sdk.responses.stream(model="m", input="weather in Paris?", tools=[FN],
                              tool_choice="required") as stream:
        final = stream.get_final_response()
    reasoning, call = final.output
    assert reasoning.type == "reasoning" and call.type == "function_call"
    assert json.loads(call.arguments) == {"city": "Paris"}
    tools_server.engine = engine = FakeEngine(script=["Sunny."])
    second = sdk.responses.create(model="m", tools=[FN], input=[
        {"role": "user", "content": "weather in Paris?"},
        *[item.model_dump(exclude_none=True) for item in final.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "22C, sunny"}])
    assert second.output_text == "Sunny."
    assistant, tool = engine.renders[0]["messages"][1:]
    assert assistant["reasoning_content"] == "hmm" and tool["content"] == "22C, sunny"


@pytest.mark.parametrize("stream", [False, True])
async def test_disconnect_aborts(stream):
    engine = FakeEngine(script=["w"] * 2000, delay_s=0.005, ctx_size=100_000)
    gone = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, gone.set)
    await call_asgi(create_app(engine, AppConfig()), RESPONSES,
                    {"input": "hi", "stream": stream}, lambda sent: False, gone)
    assert len(engine.aborted) == 1 and not engine.finished
