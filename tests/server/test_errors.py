"""Every error path answers an OpenAI-format body with the right status."""

from __future__ import annotations

import logging

import pytest

from mlx_server.config import AppConfig, ServerConfig
from mlx_server.engine.types import (
    CapacityError,
    EngineError,
    InvalidRequestError,
    QueueFullError,
)

from .conftest import CHAT, COMPLETIONS, USER_HI, assert_schema, sse_payloads
from .fake_engine import FakeEngine


def error_of(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert_schema("ErrorResponse", r.json())
    return r.json()["error"]


async def test_malformed_json(client):
    err = error_of(await client.post(CHAT, content=b'{"messages": [', headers={
        "content-type": "application/json"}), 400)
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_json"
    assert err["param"] is None


@pytest.mark.parametrize("body", [b"", b"[]", b'"x"', b"null"])
async def test_body_not_an_object(client, body):
    error_of(await client.post(CHAT, content=body), 400)


async def test_unknown_field_is_named(client):
    err = error_of(await client.post(CHAT, json={"messages": USER_HI, "frobnicate": 1}), 400)
    assert err["param"] == "frobnicate" and err["code"] == "unknown_parameter"
    assert "frobnicate" in err["message"]


async def test_missing_field(client):
    err = error_of(await client.post(CHAT, json={"model": "m"}), 400)
    assert err["param"] == "messages" and err["code"] == "missing_required_parameter"
    err = error_of(await client.post(COMPLETIONS, json={"model": "m"}), 400)
    assert err["param"] == "prompt"


@pytest.mark.parametrize("extra, param", [
    ({"temperature": "hot"}, "temperature"),
    ({"stream": "yes"}, "stream"),
    ({"n": 1.5}, "n"),
    ({"stop": 3}, "stop"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages.0.content.0.type"),
    ({"messages": [{"content": "x"}]}, "messages.0.role"),
])
async def test_wrong_types(client, extra, param):
    err = error_of(await client.post(CHAT, json={"messages": USER_HI, **extra}), 400)
    assert err["param"] == param, err


@pytest.mark.parametrize("extra, param", [
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"n": 0}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": -1}, "max_completion_tokens"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),  # needs logprobs: true
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"logit_bias": {"5000": 1}}, "logit_bias"),  # outside the fake's 1000-token vocabulary
    ({"min_p": 2}, "min_p"),
    ({"messages": []}, "messages"),
])
async def test_out_of_range(client, extra, param):
    err = error_of(await client.post(CHAT, json={"messages": USER_HI, **extra}), 400)
    assert err["param"] == param, err


async def test_completions_logprobs_range(client):
    err = error_of(await client.post(COMPLETIONS, json={"prompt": "x", "logprobs": 21}), 400)
    assert err["param"] == "logprobs"


@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools.0"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"web_search_options": {}}, "web_search_options"),
])
async def test_not_supported_yet_is_not_silently_ignored(client, extra, param):
    err = error_of(await client.post(CHAT, json={"messages": USER_HI, **extra}), 400)
    assert err["param"] == param and "not supported yet" in err["message"]


async def test_images_are_refused(client):
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    err = error_of(await client.post(CHAT, json={"messages": messages}), 400)
    assert err["param"] == "messages.0.content.1"
    assert "does not accept images" in err["message"]


async def test_bad_tool_call_arguments(client):
    messages = [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]
    err = error_of(await client.post(CHAT, json={"messages": messages}), 400)
    assert err["param"] == "messages.0.tool_calls.0.function.arguments"


async def test_user_message_needs_content(client):
    err = error_of(await client.post(CHAT, json={"messages": [{"role": "user"}]}), 400)
    assert err["param"] == "messages.0.content"


async def test_unknown_route_and_wrong_method(client):
    err = error_of(await client.get("/v1/nope"), 404)
    assert err["type"] == "not_found_error"
    r = await client.get(CHAT)
    err = error_of(r, 405)
    assert "POST" in r.headers["allow"]


async def test_unknown_model(client):
    err = error_of(await client.get("/v1/models/some/other-model"), 404)
    assert err["type"] == "not_found_error" and err["param"] == "model"


# ---------------------------------------------------------------- body size


async def test_body_over_limit_by_content_length(make_client):
    config = AppConfig(server=ServerConfig(max_body_bytes=1000))
    async with make_client(FakeEngine(), config) as c:
        big = {"messages": [{"role": "user", "content": "x " * 1000}]}
        err = error_of(await c.post(CHAT, json=big), 413)
        assert "1000" in err["message"]
        ok = await c.post(CHAT, json={"messages": USER_HI, "max_tokens": 1})
        assert ok.status_code == 200


async def test_body_over_limit_when_streamed_without_length(make_client):
    config = AppConfig(server=ServerConfig(max_body_bytes=1000))

    async def chunks():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}]}'

    async with make_client(FakeEngine(), config) as c:
        r = await c.post(CHAT, content=chunks())
        assert "content-length" not in r.request.headers
        error_of(r, 413)


# ---------------------------------------------------------------- engine errors


async def test_engine_exception_is_a_500_without_details(make_client, caplog):
    engine = FakeEngine(raise_on_generate=EngineError("secret internals at 0xdeadbeef"))
    async with make_client(engine) as c:
        with caplog.at_level(logging.ERROR):
            r = await c.post(CHAT, json={"messages": USER_HI}, headers={"x-request-id": "rid-1"})
    err = error_of(r, 500)
    assert err["type"] == "server_error"
    assert "secret" not in r.text and "Traceback" not in r.text
    assert "rid-1" in caplog.text and "secret internals" in caplog.text


async def test_unexpected_exception_is_a_500_logged_with_request_id(make_client, caplog):
    engine = FakeEngine()
    engine.render_chat = lambda *a, **k: 1 / 0  # type: ignore[method-assign]
    async with make_client(engine) as c:
        with caplog.at_level(logging.ERROR):
            r = await c.post(CHAT, json={"messages": USER_HI}, headers={"x-request-id": "rid-2"})
    error_of(r, 500)
    assert "ZeroDivision" not in r.text and "Traceback" not in r.text
    assert r.headers["x-request-id"] == "rid-2"
    assert "rid-2" in caplog.text and "ZeroDivisionError" in caplog.text


async def test_queue_full_is_503_with_retry_after(make_client):
    async with make_client(FakeEngine(raise_on_generate=QueueFullError(retry_after_s=7))) as c:
        for stream in (False, True):
            r = await c.post(CHAT, json={"messages": USER_HI, "stream": stream})
            error_of(r, 503)
            assert r.headers["retry-after"] == "7"


async def test_prompt_too_long_states_both_numbers(make_client):
    async with make_client(FakeEngine(ctx_size=10)) as c:
        long = [{"role": "user", "content": "word " * 30}]
        err = error_of(await c.post(CHAT, json={"messages": long}), 400)
        assert "32" in err["message"] and "10" in err["message"]  # 30 words + 2 role markers
        assert err["param"] == "messages" and err["code"] == "context_length_exceeded"
        err = error_of(await c.post(COMPLETIONS, json={"prompt": "w " * 12}), 400)
        assert "12" in err["message"] and "10" in err["message"] and err["param"] == "prompt"


@pytest.mark.parametrize("exc, status, param", [
    (CapacityError("needs more KV cache than exists"), 400, None),
    (InvalidRequestError("bad bias", param="logit_bias"), 400, "logit_bias"),
])
async def test_other_engine_errors(make_client, exc, status, param):
    async with make_client(FakeEngine(raise_on_generate=exc)) as c:
        err = error_of(await c.post(CHAT, json={"messages": USER_HI}), status)
        assert err["param"] == param and str(exc) in err["message"]


async def test_template_error_is_a_400(make_client):
    async with make_client(FakeEngine(template_error="roles must alternate")) as c:
        err = error_of(await c.post(CHAT, json={"messages": USER_HI}), 400)
        assert "roles must alternate" in err["message"] and err["param"] == "messages"


async def test_failure_reported_as_finish_reason(make_client):
    async with make_client(FakeEngine(fail_after=2)) as c:
        err = error_of(await c.post(CHAT, json={"messages": USER_HI}), 500)
        assert "fake failure" not in err["message"]
        r = await c.post(CHAT, json={"messages": USER_HI, "stream": True})
        assert r.status_code == 200
        payloads = sse_payloads(r.text)
        assert payloads[-1]["error"]["type"] == "server_error"
        assert "".join(p["choices"][0]["delta"].get("content", "")
                       for p in payloads[:-1]) == "the quick"


async def test_exception_mid_stream_becomes_an_error_event(make_client):
    engine = FakeEngine(raise_after=1)
    async with make_client(engine) as c:
        r = await c.post(CHAT, json={"messages": USER_HI, "stream": True, "n": 2})
        payloads = sse_payloads(r.text)
        assert payloads[-1] == {"error": {"message": "The engine failed while processing your "
                                          "request.", "type": "server_error", "param": None,
                                          "code": None}}
        r = await c.post(COMPLETIONS, json={"prompt": "x", "stream": True})
        assert "error" in sse_payloads(r.text)[-1]


async def test_timeout_finish_reads_as_length(make_client):
    engine = FakeEngine()
    original = engine._out

    def timeout_instead_of_length(*args, **kwargs):
        out = original(*args, **kwargs)
        if out.finish_reason == "length":
            from dataclasses import replace
            out = replace(out, finish_reason="timeout")
        return out

    engine._out = timeout_instead_of_length  # type: ignore[method-assign]
    async with make_client(engine) as c:
        r = await c.post(CHAT, json={"messages": USER_HI, "max_tokens": 2})
        assert r.json()["choices"][0]["finish_reason"] == "length"
