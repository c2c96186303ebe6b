"""Load handling on the real server: health under load, queue limits, timeouts."""

from __future__ import annotations

import concurrent.futures as cf
import statistics
import threading
import time

import httpx
import pytest

from .conftest import start_server

pytestmark = pytest.mark.e2e


def _stream(base: str, i: int, n: int) -> int:
    body = {"model": "x", "prompt": f"Story {i}: once upon a time", "max_tokens": n,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", base + "/v1/completions", json=body, timeout=300) as r:
        return sum(1 for line in r.iter_lines() if line.startswith("data: {"))


def test_health_answers_fast_under_full_load(server):
    latencies: list[float] = []
    done = threading.Event()

    def poll():
        while not done.is_set():
            t0 = time.perf_counter()
            r = httpx.get(server.base + "/health", timeout=5)
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    with cf.ThreadPoolExecutor(8) as pool:
        chunks = list(pool.map(lambda i: _stream(server.base, i, 16), range(8)))
    done.set()
    poller.join()
    assert all(c >= 1 for c in chunks)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(f"/health under 8-stream load: n={len(latencies)} median={statistics.median(latencies)*1000:.1f}ms "
          f"p95={p95*1000:.1f}ms max={max(latencies)*1000:.1f}ms")
    # The bar is 100 ms; allow slack for a loaded CI machine, report the real numbers.
    assert p95 < 0.5


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory):
    srv = start_server(tmp_path_factory, "--max-slots", "1", "--max-queue", "1", "--timeout", "3")
    yield srv
    srv.stop()


def test_queue_full_gets_503_with_retry_after(tight_server):
    def post(i):
        return httpx.post(tight_server.base + "/v1/completions", timeout=120,
                          json={"model": "x", "prompt": f"Count {i}:", "max_tokens": 12})

    with cf.ThreadPoolExecutor(5) as pool:
        results = list(pool.map(post, range(5)))
    codes = sorted(r.status_code for r in results)
    assert 200 in codes and 503 in codes, codes
    rejected = next(r for r in results if r.status_code == 503)
    assert int(rejected.headers["retry-after"]) >= 1
    assert rejected.json()["error"]["message"]
    # The server keeps serving once the burst is over.
    assert post(99).status_code == 200


def test_request_timeout_ends_generation(tight_server):
    t0 = time.perf_counter()
    r = httpx.post(tight_server.base + "/v1/completions", timeout=120,
                   json={"model": "x", "prompt": "Once", "max_tokens": 2000})
    assert time.perf_counter() - t0 < 30
    assert r.status_code == 200
    assert r.json()["choices"][0]["finish_reason"] == "length"
