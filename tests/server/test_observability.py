"""The access log (one line per request, JSON with --log-format json) and the shutdown
drain (new requests turned away, in-flight ones finished or ended with a final event)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from mlx_server.logs import JsonFormatter

from .conftest import CHAT, COMPLETIONS, USER_HI, sse_payloads


def access_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mlx_server.access"]


async def test_one_log_line_per_request(client, caplog):
    caplog.set_level(logging.INFO, logger="mlx_server.access")
    r = await client.post(CHAT, json={"messages": USER_HI, "max_tokens": 3},
                          headers={"x-request-id": "req-1"})
    assert r.status_code == 200
    (record,) = access_records(caplog)
    event = record.event
    assert event["event"] == "request" and event["request_id"] == "req-1"
    assert (event["method"], event["route"], event["status"]) == ("POST", CHAT, 200)
    assert (event["prompt_tokens"], event["cached_tokens"], event["completion_tokens"]) == (4, 0, 3)
    assert event["ttft_ms"] >= 0 and event["duration_ms"] >= event["ttft_ms"]
    assert event["finish_reasons"] == ["length"]
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["request_id"] == "req-1" and parsed["level"] == "info"
    assert "POST /v1/chat/completions 200" in parsed["msg"]


async def test_streams_and_errors_are_logged_once(client, caplog):
    caplog.set_level(logging.DEBUG, logger="mlx_server.access")
    await client.post(COMPLETIONS, json={"prompt": "a b", "max_tokens": 2, "stream": True})
    await client.post(CHAT, json={"messages": "nope"})
    await client.get("/health")
    events = [r.event for r in access_records(caplog)]
    assert [(e["route"], e["status"]) for e in events] == [
        (COMPLETIONS, 200), (CHAT, 400), ("/health", 200)]
    assert events[0]["completion_tokens"] == 2 and "prompt_tokens" not in events[1]
    levels = [r.levelno for r in access_records(caplog)]
    assert levels == [logging.INFO, logging.INFO, logging.DEBUG]  # probes stay quiet


# ---------------------------------------------------------------- shutdown drain


@pytest.fixture
def observer(client):
    return client._transport.app.state.observer


async def test_drain_finishes_short_requests_and_ends_long_ones(engine, client, observer):
    engine.delay_s = 0.01
    short = asyncio.ensure_future(client.post(CHAT, json={"messages": USER_HI, "max_tokens": 5}))
    long_stream = asyncio.ensure_future(client.post(CHAT, json={
        "messages": USER_HI, "stream": True, "max_tokens": 400, "ignore_eos": True}))
    long_plain = asyncio.ensure_future(client.post(COMPLETIONS, json={
        "prompt": "x", "max_tokens": 400, "ignore_eos": True}))
    while len(engine.running) < 3:
        await asyncio.sleep(0.005)
    observer.begin_drain(0.3, asyncio.get_running_loop(), "SIGTERM")

    # New requests are turned away at once; probes still answer.
    r = await client.post(CHAT, json={"messages": USER_HI})
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200

    assert (await short).status_code == 200  # finished within the drain
    r = await long_stream
    assert r.status_code == 200
    chunks = sse_payloads(r.text)  # ends with [DONE]: a proper end, not a cut connection
    assert chunks[-1]["error"]["code"] == "aborted"
    assert any(c.get("choices") and c["choices"][0]["delta"].get("content") for c in chunks)
    r = await long_plain
    assert r.status_code == 503 and r.json()["error"]["code"] == "aborted"
    assert engine.running == {} and observer.inflight == {}


async def test_drain_with_nothing_in_flight(client, observer):
    observer.begin_drain(0.01, asyncio.get_running_loop(), "SIGINT")
    observer.begin_drain(0.01, asyncio.get_running_loop(), "SIGINT")  # idempotent
    await asyncio.sleep(0.05)
    assert (await client.post(COMPLETIONS, json={"prompt": "a"})).status_code == 503
