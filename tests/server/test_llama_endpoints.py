"""llama-server's own endpoints: /slots, /props, /tokenize, /detokenize, /apply-template,
and the `timings` object of completion responses."""

from __future__ import annotations

import asyncio

import pytest

from mlx_server.config import AppConfig, ServerConfig

from .conftest import CHAT, COMPLETIONS, USER_HI, sse_payloads
from .fake_engine import DECODE_S_PER_TOKEN, PROMPT_S, SCRIPT, FakeEngine

TIMING_FIELDS = {"cache_n": int, "prompt_n": int, "prompt_ms": float,
                 "prompt_per_token_ms": float, "prompt_per_second": float, "predicted_n": int,
                 "predicted_ms": float, "predicted_per_token_ms": float,
                 "predicted_per_second": float}


def check_timings(t: dict, prompt_n: int, predicted_n: int, cache_n: int = 0) -> None:
    assert {k: type(v) for k, v in t.items()} == TIMING_FIELDS
    assert (t["cache_n"], t["prompt_n"], t["predicted_n"]) == (cache_n, prompt_n, predicted_n)
    assert t["prompt_ms"] == pytest.approx(PROMPT_S * 1000)
    assert t["prompt_per_token_ms"] == pytest.approx(PROMPT_S * 1000 / prompt_n)
    assert t["prompt_per_second"] == pytest.approx(prompt_n / PROMPT_S)
    decode_ms = DECODE_S_PER_TOKEN * 1000 * (predicted_n - 1)
    assert t["predicted_ms"] == pytest.approx(decode_ms)
    assert t["predicted_per_token_ms"] == pytest.approx(decode_ms / predicted_n)
    assert t["predicted_per_second"] == pytest.approx(predicted_n * 1000 / decode_ms)


# ---------------------------------------------------------------- timings


async def test_chat_timings(client):
    body = (await client.post(CHAT, json={"messages": USER_HI})).json()
    # "<user> hello there" + "<assistant>": 4 prompt tokens; the whole script comes back.
    check_timings(body["timings"], prompt_n=4, predicted_n=len(SCRIPT))
    again = (await client.post(CHAT, json={"messages": USER_HI, "max_tokens": 3})).json()
    check_timings(again["timings"], prompt_n=1, predicted_n=3, cache_n=3)


async def test_chat_stream_timings_on_the_last_chunk(client):
    r = await client.post(CHAT, json={"messages": USER_HI, "stream": True, "max_tokens": 4,
                                      "stream_options": {"include_usage": True}})
    chunks = sse_payloads(r.text)
    with_timings = [c for c in chunks if "timings" in c]
    assert len(with_timings) == 1 and with_timings[0]["choices"][0]["finish_reason"] == "length"
    check_timings(with_timings[0]["timings"], prompt_n=4, predicted_n=4)


async def test_completion_timings(client):
    body = (await client.post(COMPLETIONS, json={"prompt": "a b c", "max_tokens": 2})).json()
    check_timings(body["timings"], prompt_n=3, predicted_n=2)
    r = await client.post(COMPLETIONS, json={"prompt": "x y", "max_tokens": 2, "stream": True})
    chunks = sse_payloads(r.text)
    assert "timings" in chunks[-1] and all("timings" not in c for c in chunks[:-1])
    check_timings(chunks[-1]["timings"], prompt_n=2, predicted_n=2)


async def test_timings_with_n_choices(client):
    body = (await client.post(COMPLETIONS, json={"prompt": "p q", "max_tokens": 2, "n": 3})).json()
    t = body["timings"]
    assert t["predicted_n"] == 6 and t["predicted_ms"] == pytest.approx(10.0)


# ---------------------------------------------------------------- /slots and /props


async def test_slots_idle(client):
    r = await client.get("/slots")
    assert r.status_code == 200
    slots = r.json()
    assert [s["id"] for s in slots] == [0, 1, 2, 3]
    for s in slots:
        assert s["is_processing"] is False and s["n_ctx"] == 512 and s["id_task"] == -1
        assert s["next_token"]["n_decoded"] == 0
    assert (await client.get("/slots?fail_on_no_slot=1")).status_code == 200


async def test_slots_while_busy(engine, client):
    engine.delay_s = 0.02
    task = asyncio.ensure_future(client.post(CHAT, json={"messages": USER_HI}))
    while not engine.running:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    slots = (await client.get("/slots")).json()
    busy = [s for s in slots if s["is_processing"]]
    assert len(busy) == 1 and busy[0]["id"] == 0
    assert busy[0]["n_prompt_tokens"] == 4 and busy[0]["n_prompt_tokens_cache"] == 0
    assert busy[0]["next_token"]["n_decoded"] >= 1 and busy[0]["id_task"] != -1
    assert busy[0]["request_id"].startswith("chatcmpl-")
    assert (await task).status_code == 200
    assert not any(s["is_processing"] for s in (await client.get("/slots")).json())


async def test_slots_fail_on_no_slot(engine, client):
    engine.delay_s = 0.02
    tasks = [asyncio.ensure_future(client.post(CHAT, json={"messages": USER_HI, "seed": i}))
             for i in range(4)]
    while len(engine.running) < 4:
        await asyncio.sleep(0.005)
    r = await client.get("/slots", params={"fail_on_no_slot": 1})
    assert r.status_code == 503
    assert r.json() == {"error": {"code": 503, "message": "no slot available",
                                  "type": "unavailable_error"}}
    assert sorted(s["id"] for s in (await client.get("/slots")).json()) == [0, 1, 2, 3]
    await asyncio.gather(*tasks)


async def test_slots_can_be_disabled(make_client):
    config = AppConfig(server=ServerConfig(slots_endpoint=False))
    async with make_client(FakeEngine(), config) as c:
        r = await c.get("/slots")
        assert r.status_code == 501 and r.json()["error"]["type"] == "not_supported_error"


async def test_props(client):
    props = (await client.get("/props")).json()
    assert props["total_slots"] == 4 and props["n_ctx"] == 512
    assert props["model_path"] == "/fake/fake-model" and props["chat_template"] == ""
    assert props["build_info"].startswith("mlx-server ")
    settings = props["default_generation_settings"]
    assert settings["n_ctx"] == 512 and settings["params"]["temperature"] == 1.0


async def test_endpoints_answer_503_while_loading(make_client):
    async with make_client(lambda: None) as c:
        for method, path in (("GET", "/slots"), ("GET", "/props"), ("POST", "/tokenize")):
            r = await c.request(method, path, json={"content": "a"})
            assert r.status_code == 503, path


# ---------------------------------------------------------------- tokenizing


async def test_tokenize_and_detokenize(client):
    ids = (await client.post("/tokenize", json={"content": "hello big world"})).json()["tokens"]
    assert len(ids) == 3 and all(isinstance(i, int) for i in ids)
    r = await client.post("/tokenize", json={"content": "hello world", "with_pieces": True})
    assert r.json()["tokens"] == [{"id": ids[0], "piece": "hello"},
                                  {"id": ids[2], "piece": "world"}]
    r = await client.post("/detokenize", json={"tokens": ids})
    assert r.json() == {"content": "hello big world"}


async def test_tokenize_errors(client):
    assert (await client.post("/tokenize", json={})).status_code == 400
    assert (await client.post("/tokenize", json={"content": 5})).status_code == 400
    r = await client.post("/detokenize", json={"tokens": [5000]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tokens"


async def test_apply_template(engine, client):
    r = await client.post("/apply-template", json={"messages": USER_HI})
    assert r.status_code == 200
    assert r.json() == {"prompt": "<user> hello there <assistant>"}
    assert engine.requests == []  # nothing was generated
    r = await client.post("/apply-template", json={"messages": []})
    assert r.status_code == 400
