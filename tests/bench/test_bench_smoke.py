"""Smoke test of the benchmark harness's client measurements (no model needed).

A fake OpenAI-style SSE server (Starlette in uvicorn, in a thread) waits FIRST_DELAY
before its first content chunk and GAP between chunks; the harness's client must
report TTFT ~ FIRST_DELAY, ITL ~ GAP, decode tok/s ~ 1/GAP and the usage count.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

uvicorn = pytest.importorskip("uvicorn")
starlette_apps = pytest.importorskip("starlette.applications")
from starlette.responses import JSONResponse, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from bench import report  # noqa: E402
from bench.client import aggregate, make_client, run_closed_loop, stream_request  # noqa: E402
from bench.procs import Proc  # noqa: E402
from bench.scenarios import Config, Endpoint, multiturn, probe, single_stream, sweep  # noqa: E402

FIRST_DELAY = 0.20
GAP = 0.03
N_CHUNKS = 10


async def completions(request):
    body = await request.json()
    if body.get("prompt") == "fail":
        return JSONResponse({"error": "boom"}, status_code=500)
    n = min(int(body.get("max_tokens", N_CHUNKS)), N_CHUNKS)
    chat = "messages" in body
    usage = (body.get("stream_options") or {}).get("include_usage")

    async def gen():
        # A role-only first chunk (no content) must not count for TTFT.
        if chat:
            yield "data: " + json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}) + "\n\n"
        await asyncio.sleep(FIRST_DELAY)
        for i in range(n):
            if i:
                await asyncio.sleep(GAP)
            piece = {"delta": {"content": f" w{i}"}} if chat else {"text": f" w{i}"}
            fin = "length" if i == n - 1 else None
            yield "data: " + json.dumps({"choices": [dict(index=0, finish_reason=fin, **piece)]}) + "\n\n"
        if usage:
            u = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
            yield "data: " + json.dumps({"choices": [], "usage": u}) + "\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(gen(), media_type="text/event-stream")


async def health(request):
    return JSONResponse({"status": "ok"})


@pytest.fixture(scope="module")
def fake_server():
    app = starlette_apps.Starlette(routes=[
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/health", health),
    ])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    t0 = time.time()
    while not server.started:
        assert time.time() - t0 < 10, "fake server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    th.join(timeout=5)


async def test_single_request_timings(fake_server):
    async with make_client() as c:
        for api in ("completions", "chat"):
            ep = Endpoint(fake_server, api=api)
            r = await stream_request(c, ep.url(), ep.payload(prompt="hi", max_tokens=N_CHUNKS))
            assert r.ok, r.error
            assert r.output_tokens == N_CHUNKS and r.completion_tokens == N_CHUNKS
            assert r.content_chunks == N_CHUNKS and r.prompt_tokens == 7
            assert FIRST_DELAY * 0.9 <= r.ttft < FIRST_DELAY + 0.3
            assert len(r.itls) == N_CHUNKS - 1
            assert all(GAP * 0.8 <= x < GAP + 0.1 for x in r.itls)
            assert 0.4 / GAP < r.decode_tps <= 1.1 / GAP
            assert r.finish_reason == "length"
            assert r.text == "".join(f" w{i}" for i in range(N_CHUNKS))


async def test_usage_fallback_and_failures(fake_server):
    async with make_client() as c:
        ep = Endpoint(fake_server)
        p = ep.payload(prompt="hi", max_tokens=4)
        p["stream_options"] = {"include_usage": False}
        r = await stream_request(c, ep.url(), p)
        assert r.ok and r.completion_tokens is None and r.output_tokens == 4
        bad = await stream_request(c, ep.url(), ep.payload(prompt="fail", max_tokens=4))
        assert not bad.ok and bad.status == 500 and "boom" in bad.error


async def test_concurrent_aggregate(fake_server):
    ep = Endpoint(fake_server)
    payloads = [ep.payload(prompt="hi", max_tokens=N_CHUNKS) for _ in range(8)]
    payloads.append(ep.payload(prompt="fail", max_tokens=N_CHUNKS))
    results, wall = await run_closed_loop(ep.url(), payloads, concurrency=4)
    agg = aggregate(results, wall)
    assert agg["requests"] == 9 and agg["failures"] == 1
    assert agg["output_tokens"] == 8 * N_CHUNKS
    one = FIRST_DELAY + (N_CHUNKS - 1) * GAP
    # 4 workers, 8 good requests -> about 2 request-times of wall clock (the
    # failing one is instant), so aggregate tok/s ~ 4 x single-stream.
    assert one * 1.8 < wall < one * 2 + 1.0
    assert agg["agg_tok_s"] == pytest.approx(8 * N_CHUNKS / wall)
    assert FIRST_DELAY * 0.9 <= agg["ttft_p50"] < FIRST_DELAY + 0.3
    assert GAP * 0.8 <= agg["itl_p50"] < GAP + 0.1


async def test_scenarios_and_report(fake_server):
    cfg = Config(single_max_tokens=5, single_reps=2, levels=[1, 2], requests_per_client=1,
                 sweep_max_tokens=5, system_tokens=50, turns=2, turn_max_tokens=5)
    ep = Endpoint(fake_server)
    quiet = lambda *a, **k: None  # noqa: E731
    count = lambda s: len(s.split())  # noqa: E731
    info = await probe(ep)
    assert info["usage_reported"]
    res = {
        "single": await single_stream(ep, cfg, count, log=quiet),
        "sweep": await sweep(ep, cfg, count, log=quiet),
        "multiturn": await multiturn(ep, cfg, count, log=quiet),
    }
    assert res["single"]["output_tokens"] == [5, 5]
    assert [lv["concurrency"] for lv in res["sweep"]["levels"]] == [1, 2]
    assert len(res["multiturn"]["turns"]) == 2 and res["multiturn"]["cold_ttft"] > 0
    doc = {"targets": {"mlx-server": res, "mlx_lm.server": res,
                       "raw": {"decode_tps_median": 20.0, "runs": [{}]}},
           "machine": {"roofline_tok_s": 100.0}}
    md = report.render(doc)
    assert "Concurrency sweep" in md and "## Ratios" in md
    labels = dict((a, b) for a, b, _ in report.ratios(doc))
    assert labels["ours / mlx_lm.server: single-stream decode tok/s"] == pytest.approx(1.0)


def test_proc_group_is_killed(tmp_path):
    # The child starts a grandchild; stopping must take down the whole group.
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print(p.pid, flush=True); time.sleep(60)")
    proc = Proc("sleeper", [sys.executable, "-c", code], {}, tmp_path / "s.log").start()
    t0 = time.time()
    while not (tmp_path / "s.log").read_text().strip().splitlines()[1:]:
        assert time.time() - t0 < 10
        time.sleep(0.05)
    grandchild = int((tmp_path / "s.log").read_text().strip().splitlines()[-1])
    proc.stop(grace=2)
    assert not proc.alive()
    time.sleep(0.2)
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]
