"""A short soak in CI: mixed load, no errors, memory not growing. The long one is bench/soak.py."""

import pytest

from bench.soak import run_load

from .conftest import start_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def soak_server(tmp_path_factory):
    # A small KV budget so the prefix cache fills, and starts evicting, within the test.
    srv = start_server(tmp_path_factory, "--max-slots", "4", "--cache-bytes", str(32 << 20))
    yield srv
    srv.stop()


def test_short_soak_is_clean_and_flat(soak_server):
    out = run_load(soak_server.base, soak_server.proc.pid, seconds=60, concurrency=3, interval=5,
                   log=print)
    assert out["n_errors"] == 0, out["errors"]
    s = out["summary"]
    print("soak summary:", s)
    assert out["samples"][-1]["requests"] >= 5
    # After warm-up (the first half: buffers and caches fill), memory must not keep climbing.
    mid = out["samples"][len(out["samples"]) // 2]["rss_mib"]
    assert s["rss_last"] - mid < 150, s
