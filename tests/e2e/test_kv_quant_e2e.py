"""-ctk/-ctv q8_0 on the real default model: it answers, says so, and reuses prefixes."""

import httpx
import pytest

from .conftest import ServerProcess, start_server


@pytest.fixture(scope="module")
def q8_server(tmp_path_factory):
    srv = start_server(tmp_path_factory, "-ctk", "q8_0", "-ctv", "q8_0", "--max-slots", "2",
                       "--ctx-size", "2048")
    yield srv
    srv.stop()


def _chat(srv, question: str) -> dict:
    system = ("You are a terse assistant for a travel company. Answer in one short sentence, "
              "name the city first, and never add a greeting or a closing remark.")
    r = httpx.post(srv.base + "/v1/chat/completions", timeout=300, json={
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        "max_tokens": 6, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()


def test_q8_cache_answers_reports_and_reuses_prefixes(q8_server):
    first = _chat(q8_server, "What is the capital of France?")
    assert first["choices"][0]["message"]["content"].strip()
    second = _chat(q8_server, "What is the capital of Italy?")
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 0

    props = httpx.get(q8_server.base + "/props", timeout=30).json()
    assert (props["kv_cache_type_k"], props["kv_cache_type_v"]) == ("q8_0", "q8_0")
    metrics = httpx.get(q8_server.base + "/metrics", timeout=30).text
    line = next(x for x in metrics.splitlines()
                if x.startswith("mlxserver:kv_cache_bytes_per_token{"))
    assert 'cache_type_k="q8_0"' in line
    assert float(line.rsplit(" ", 1)[1]) == props["kv_cache_bytes_per_token"] > 0


def test_mismatched_quantized_types_refuse_to_start(tmp_path):
    srv = ServerProcess(["-ctk", "q8_0", "-ctv", "f16"], tmp_path / "server.log")
    try:
        assert srv.proc.wait(120) == 2
    finally:
        srv.stop()
    assert "K and V quantized alike" in srv.log_tail()
