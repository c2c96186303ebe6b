"""LLMKube's Metal-agent launch line, verbatim, on the real default model: probes, the
llama-server endpoints, /metrics, JSON logs, API keys, then SIGTERM under load."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import httpx
import pytest

from mlx_server.loading.default_model import default_gguf_path

from .conftest import ServerProcess, free_port

pytestmark = pytest.mark.e2e

KEY = "e2e-secret"
AUTH = {"authorization": f"Bearer {KEY}"}
DRAIN_S = 4.0


@pytest.fixture(scope="module")
def llmkube(tmp_path_factory):
    port = free_port()
    line = (f"--model {default_gguf_path()} --host 0.0.0.0 --port {port} --n-gpu-layers 99 "
            "--ctx-size 2048 --metrics --parallel 4 --flash-attn on --mlock --threads 8 "
            "--batch-size 2048 --jinja").split()
    user_extra = ["--api-key", KEY, "--log-format", "json", "--drain-timeout", str(DRAIN_S)]
    srv = ServerProcess(line + user_extra, tmp_path_factory.mktemp("llmkube") / "server.log",
                        port=port)
    try:
        srv.ready_s = srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def log_events(srv: ServerProcess) -> list[dict]:
    lines = srv.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_ready_and_probes(llmkube):
    print(f"\ntime to ready (process start to /health 200): {llmkube.ready_s:.1f}s")
    assert llmkube.ready_s < 120  # LLMKube's startup probe budget
    r = httpx.get(llmkube.base + "/health")  # no key needed
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert httpx.get(llmkube.base + "/v1/models").status_code == 401
    assert httpx.get(llmkube.base + "/v1/models", headers=AUTH).status_code == 200
    # The "ready" line is written by a watcher that polls every 0.1 s: it may trail /health.
    deadline = time.monotonic() + 10
    while True:
        events = log_events(llmkube)
        kinds = [e.get("event") for e in events]
        if "ready" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "starting" in kinds and "ready" in kinds
    ignored = next(e for e in events if e.get("event") == "ignored_flags")["flags"]
    assert ignored == ["--n-gpu-layers 99", "--flash-attn on", "--mlock", "--threads 8",
                       "--batch-size 2048"]


def test_llama_server_endpoints_and_metrics(llmkube):
    base = llmkube.base
    props = httpx.get(base + "/props", headers=AUTH).json()
    assert props["total_slots"] == 4 and props["n_ctx"] == 2048
    slots = httpx.get(base + "/slots", headers=AUTH).json()
    assert len(slots) == 4 and not any(s["is_processing"] for s in slots)
    before = httpx.get(base + "/metrics").text  # public: no key
    r = httpx.post(base + "/v1/completions", headers={**AUTH, "x-request-id": "e2e-req-1"},
                   json={"prompt": "The capital of France is", "max_tokens": 6,
                         "temperature": 0}, timeout=120)
    assert r.status_code == 200 and r.headers["x-request-id"] == "e2e-req-1"
    t = r.json()["timings"]
    assert (t["prompt_n"] + t["cache_n"], t["predicted_n"]) == (6, 6)
    assert t["predicted_per_second"] > 0
    after = httpx.get(base + "/metrics").text
    assert _value(after, "llamacpp:tokens_predicted_total") - _value(
        before, "llamacpp:tokens_predicted_total") == 6
    assert "vllm:time_to_first_token_seconds_bucket" in after
    ids = httpx.post(base + "/tokenize", headers=AUTH, json={"content": "Hello"}).json()["tokens"]
    text = httpx.post(base + "/detokenize", headers=AUTH, json={"tokens": ids}).json()["content"]
    assert text.strip() == "Hello"
    time.sleep(0.2)
    line = next(e for e in log_events(llmkube) if e.get("request_id") == "e2e-req-1")
    assert line["route"] == "/v1/completions" and line["status"] == 200
    assert line["completion_tokens"] == 6 and line["ttft_ms"] > 0


def _value(text: str, name: str) -> float:
    return float(next(ln.split()[1] for ln in text.splitlines() if ln.startswith(name + " ")))


def test_sigterm_under_load(llmkube):
    """Two long streams and a short one in flight; SIGTERM once the short one has its first
    token: it finishes within the drain, the long ones get a final error event."""
    base, results = llmkube.base, {}
    started = {name: threading.Event() for name in ("a", "b", "short")}

    def stream(name: str, max_tokens: int) -> None:
        body = {"messages": [{"role": "user", "content": f"Tell a long story {name}."}],
                "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
        lines = []
        try:
            with httpx.stream("POST", base + "/v1/chat/completions", json=body, headers=AUTH,
                              timeout=60) as r:
                for line in r.iter_lines():
                    if line:
                        lines.append(line)
                    if '"content":"' in line and '"content":""' not in line:
                        started[name].set()
        except httpx.HTTPError as e:
            lines.append(f"cut: {e!r}")
        results[name] = lines

    workers = [threading.Thread(target=stream, args=(n, m))
               for n, m in (("a", 1500), ("b", 1500), ("short", 3))]
    for w in workers:
        w.start()
    for name, event in started.items():
        assert event.wait(120), f"stream {name} never started"

    t0 = time.monotonic()
    llmkube.proc.send_signal(signal.SIGTERM)
    # The port closes at once: new connections are refused.
    while time.monotonic() - t0 < 2:
        try:
            socket.create_connection(("127.0.0.1", llmkube.port), timeout=0.2).close()
            time.sleep(0.05)
        except OSError:
            break
    else:
        pytest.fail("the port still accepts connections 2s after SIGTERM")
    assert llmkube.proc.wait(timeout=15) == 0
    took = time.monotonic() - t0
    for w in workers:
        w.join(timeout=10)

    assert took < 10, f"exit took {took:.1f}s, past LLMKube's 10s grace"
    assert took >= DRAIN_S - 0.5  # the long streams were given the drain time
    short = results["short"]
    assert short[-1] == "data: [DONE]" and '"finish_reason":"length"' in "".join(short)
    assert all('"error"' not in line for line in short)
    for name in ("a", "b"):
        lines = results[name]
        assert lines[-1] == "data: [DONE]", lines[-3:]  # ended properly, not cut
        final = json.loads(lines[-2][len("data: "):])
        assert final["error"]["code"] == "aborted", final
    kinds = [e.get("event") for e in log_events(llmkube)]
    assert {"draining", "drain_abort", "stopped"} <= set(kinds)
