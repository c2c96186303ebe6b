"""/metrics: known requests move each series by a known amount, with llama-server's names
and types, on the fake engine and on a real (tiny) one."""

from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlx_server.config import AppConfig, EngineConfig
from mlx_server.server import create_app

from .conftest import CHAT, COMPLETIONS, USER_HI
from .fake_engine import DECODE_S_PER_TOKEN, PROMPT_S, QUEUE_S, SCRIPT

LLAMACPP_TYPES = {
    "prompt_tokens_total": "counter", "prompt_seconds_total": "counter",
    "tokens_predicted_total": "counter", "tokens_predicted_seconds_total": "counter",
    "n_decode_total": "counter", "n_tokens_max": "counter", "n_busy_slots_per_decode": "counter",
    "prompt_tokens_seconds": "gauge", "predicted_tokens_seconds": "gauge",
    "requests_processing": "gauge", "requests_deferred": "gauge",
}


def samples(text: str) -> dict[str, float]:
    """Every sample as `name{labels}` (labels sorted, model/engine labels dropped) -> value.
    The llamacpp: lines are read as written: prometheus-client's parser would rename the
    counters that lack a `_total` suffix (Prometheus itself keeps the names)."""
    out = {m[1]: float(m[2]) for m in re.finditer(r"^(llamacpp:\w+) (\S+)$", text, re.M)}
    rest = "\n".join(line for line in text.splitlines() if "llamacpp:" not in line)
    for family in text_string_to_metric_families(rest):
        for s in family.samples:
            labels = {k: v for k, v in s.labels.items() if k not in ("model_name", "engine")}
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
                            if labels else "")
            out[key] = s.value
    return out


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


async def test_llamacpp_series_have_llama_servers_names_and_types(client):
    text = (await client.get("/metrics")).text
    for name, kind in LLAMACPP_TYPES.items():
        assert f"# TYPE llamacpp:{name} {kind}\n" in text
        assert re.search(rf"^llamacpp:{name} [0-9.e+-]+$", text, re.M), name
    for name in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                 "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds"):
        assert f"# TYPE {name} histogram\n" in text
    for name, kind in (("vllm:prefix_cache_queries", "counter"),
                       ("vllm:prefix_cache_hits", "counter"),
                       ("mlxserver:prefix_cache_evictions", "counter"),
                       ("vllm:kv_cache_usage_perc", "gauge")):
        assert f"# TYPE {name} {kind}\n" in text or f"# TYPE {name}_total {kind}\n" in text


async def test_counters_move_by_the_right_amounts(client):
    before = await scrape(client)
    # 4 prompt tokens, none cached, the whole script (9 tokens), finishing on "stop"...
    assert (await client.post(CHAT, json={"messages": USER_HI})).status_code == 200
    # ...then the same prompt again: 3 of its 4 tokens come from the cache, 3 tokens out.
    assert (await client.post(CHAT, json={"messages": USER_HI, "max_tokens": 3})).status_code == 200
    after = await scrape(client)

    def moved(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    n1, n2 = len(SCRIPT), 3
    assert moved("llamacpp:prompt_tokens_total") == 4 + 1
    assert moved("llamacpp:prompt_seconds_total") == pytest.approx(2 * PROMPT_S)
    assert moved("llamacpp:tokens_predicted_total") == n1 + n2
    decode_s = DECODE_S_PER_TOKEN * ((n1 - 1) + (n2 - 1))
    assert moved("llamacpp:tokens_predicted_seconds_total") == pytest.approx(decode_s)
    assert moved("llamacpp:n_decode_total") == n1 + n2
    assert after["llamacpp:n_tokens_max"] == 4 + n1
    assert after["llamacpp:n_busy_slots_per_decode"] == 1.0
    assert after["llamacpp:prompt_tokens_seconds"] == pytest.approx(5 / (2 * PROMPT_S))
    assert after["llamacpp:predicted_tokens_seconds"] == pytest.approx((n1 + n2) / decode_s)
    assert after["llamacpp:requests_processing"] == 0 == after["llamacpp:requests_deferred"]

    assert moved("vllm:time_to_first_token_seconds_count") == 2
    assert moved("vllm:inter_token_latency_seconds_count") == (n1 - 1) + (n2 - 1)
    assert moved("vllm:time_per_output_token_seconds_count") == 2
    assert moved("vllm:time_per_output_token_seconds_sum") == pytest.approx(
        2 * DECODE_S_PER_TOKEN)
    assert moved("vllm:e2e_request_latency_seconds_count") == 2
    assert moved("vllm:request_queue_time_seconds_count") == 2
    assert moved("vllm:request_queue_time_seconds_sum") == pytest.approx(2 * QUEUE_S)
    assert moved("vllm:request_prefill_time_seconds_sum") == pytest.approx(2 * PROMPT_S)
    assert moved("vllm:prompt_tokens_total") == 5
    assert moved("vllm:generation_tokens_total") == n1 + n2
    assert moved("vllm:request_success_total{finished_reason=stop}") == 1
    assert moved("vllm:request_success_total{finished_reason=length}") == 1
    assert moved("vllm:prefix_cache_queries_total") == 8
    assert moved("vllm:prefix_cache_hits_total") == 3
    assert after["vllm:kv_cache_usage_perc"] == 0.0
    # The throughput gauges cover the time since the previous scrape, as llama-server's do.
    again = await scrape(client)
    assert again["llamacpp:predicted_tokens_seconds"] == 0.0
    assert again["llamacpp:tokens_predicted_total"] == after["llamacpp:tokens_predicted_total"]


async def test_gauges_while_busy(engine, client):
    import asyncio

    engine.delay_s = 0.02
    tasks = [asyncio.ensure_future(client.post(COMPLETIONS, json={"prompt": f"p{i}"}))
             for i in range(2)]
    while len(engine.running) < 2:
        await asyncio.sleep(0.005)
    busy = await scrape(client)
    assert busy["llamacpp:requests_processing"] == 2 == busy["vllm:num_requests_running"]
    await asyncio.gather(*tasks)


async def test_aborted_and_failed_sequences_are_counted(engine, client):
    engine.fail_after = 2
    before = await scrape(client)
    assert (await client.post(COMPLETIONS, json={"prompt": "a"})).status_code == 500
    after = await scrape(client)
    assert after["vllm:request_success_total{finished_reason=error}"] - before.get(
        "vllm:request_success_total{finished_reason=error}", 0) == 1


async def test_metrics_before_the_model_loads(make_client):
    async with make_client(lambda: None) as c:
        r = await c.get("/metrics")
        assert r.status_code == 200 and "llamacpp:requests_processing 0" in r.text


async def test_registries_are_per_app(make_client, engine):
    async with make_client(engine) as a, make_client(engine) as b:
        await a.post(COMPLETIONS, json={"prompt": "x", "max_tokens": 2})
        assert (await scrape(a))["llamacpp:tokens_predicted_total"] == 2
        assert (await scrape(b))["llamacpp:tokens_predicted_total"] == 0


@pytest.fixture(scope="module")
def tiny_engine(tiny_llama_dir):
    from mlx_server.engine.async_engine import AsyncEngine
    from mlx_server.engine.loader import load_model

    eng = AsyncEngine(lambda: load_model(tiny_llama_dir), EngineConfig(max_slots=2),
                      "tiny").start()
    assert eng.wait_ready(60), eng.health()
    yield eng
    eng.shutdown()


async def test_real_engine_counters(tiny_engine):
    app = create_app(tiny_engine, AppConfig())
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        before = await scrape(c)
        body = {"prompt": list(range(5, 45)), "max_tokens": 5, "ignore_eos": True,
                "temperature": 0}
        for _ in range(2):
            r = await c.post(COMPLETIONS, json=body)
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5
        after = await scrape(c)
        stats = tiny_engine.stats()
    predicted = "llamacpp:tokens_predicted_total"
    assert after[predicted] - before[predicted] == 10
    cached = r.json()["timings"]["cache_n"]
    assert cached > 0  # the second request reused the first one's prompt
    assert after["llamacpp:prompt_tokens_total"] - before["llamacpp:prompt_tokens_total"] == (
        40 + 40 - cached)
    assert after["llamacpp:n_decode_total"] == stats["steps"] >= 10
    assert after["vllm:prefix_cache_hits_total"] == stats["prefix_cache_hit_tokens"] >= cached
    assert after["vllm:prefix_cache_queries_total"] == stats["prefix_cache_queried_tokens"]
    assert 0.0 <= after["vllm:kv_cache_usage_perc"] <= 1.0
    assert after["vllm:time_to_first_token_seconds_count"] == 2


async def test_speculative_counters(tiny_llama_dir):
    """With speculation on, the draft/accept counters are exported (the model as its own
    draft: every draft is accepted)."""
    from mlx_server.config import SpecConfig
    from mlx_server.engine.async_engine import AsyncEngine
    from mlx_server.engine.loader import load_model

    eng = AsyncEngine(lambda: load_model(tiny_llama_dir),
                      EngineConfig(max_slots=2, spec=SpecConfig(
                          type="draft", draft_model=str(tiny_llama_dir), draft_max=4, p_min=0.0)),
                      "tiny").start()
    assert eng.wait_ready(60), eng.health()
    try:
        app = create_app(eng, AppConfig())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
            before = await scrape(c)
            assert before["vllm:spec_decode_num_drafts_total"] == 0
            r = await c.post(COMPLETIONS, json={"prompt": [5, 6, 7, 8] * 10, "max_tokens": 12,
                                                "ignore_eos": True, "temperature": 0})
            assert r.status_code == 200
            after = await scrape(c)
        stats = eng.stats()
        assert after["vllm:spec_decode_num_drafts_total"] == stats["spec_steps"] > 0
        assert after["vllm:spec_decode_num_draft_tokens_total"] == stats["spec_draft_tokens"] > 0
        assert (after["vllm:spec_decode_num_accepted_tokens_total"] == stats["spec_accepted_tokens"]
                == stats["spec_draft_tokens"])
        assert "mlxserver:spec_decode_num_fallback_steps_total" in after
    finally:
        eng.shutdown()
