"""Soak: mixed load on our server for a fixed time, sampling memory and latency.

    python -m bench.soak --minutes 10 [--model DIR] [--concurrency 4]

Prints a table of samples (resident memory of the server, KV-cache bytes from the
engine's stats, requests done, p50/p95 latency of the last interval) and saves JSON
under bench/results/. Memory should be flat after warm-up: the slope over the second
half of the run is reported in MiB per minute.
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


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _request(c: httpx.Client, base: str, rng: random.Random) -> None:
    """One request of a random kind: chat or completion, streamed or not, with history."""
    kind = rng.choice(["chat", "chat-stream", "completion", "completion-stream", "multiturn"])
    n = rng.randint(4, 24)
    if kind.startswith("chat") or kind == "multiturn":
        msgs = [{"role": "user", "content": f"Tell me about topic {rng.randint(0, 10**6)}."}]
        if kind == "multiturn":
            msgs = [{"role": "system", "content": "You are helpful. " * 40},
                    {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                    *msgs]
        body = {"model": "x", "messages": msgs, "max_tokens": n, "stream": kind.endswith("stream")}
        path = "/v1/chat/completions"
    else:
        body = {"model": "x", "prompt": f"Item {rng.randint(0, 10**6)}:", "max_tokens": n,
                "stream": kind.endswith("stream")}
        path = "/v1/completions"
    if body["stream"]:
        with c.stream("POST", base + path, json=body) as r:
            r.raise_for_status()
            for i, _ in enumerate(r.iter_lines()):
                if rng.random() < 0.02:  # now and then a client walks away mid-stream
                    break
    else:
        c.post(base + path, json=body).raise_for_status()


def run_load(base: str, pid: int, seconds: float, concurrency: int, interval: float = 5.0,
             log=print) -> dict:
    """Drive mixed load and sample; returns the samples and a summary (used by tests too)."""
    stop = time.monotonic() + seconds
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=300, trust_env=False) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    _request(c, base, rng)
                except Exception as e:  # recorded, not raised: the soak goes on
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                with lock:
                    lat.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    samples = []
    t_start = time.monotonic()
    while any(t.is_alive() for t in threads):
        time.sleep(interval)
        with lock:
            window, lat[:] = list(lat), []
        samples.append(_sample(pid, t_start, window, samples))
        log(_fmt(samples[-1]))
    for t in threads:
        t.join()
    return {"samples": samples, "errors": errors[:20], "n_errors": len(errors),
            "summary": summarize(samples)}


def _sample(pid: int, t_start: float, window: list[float], previous: list[dict]) -> dict:
    q = statistics.quantiles(window, n=20) if len(window) >= 2 else [0.0] * 19
    done = (previous[-1]["requests"] if previous else 0) + len(window)
    return {"t_s": round(time.monotonic() - t_start, 1), "rss_mib": rss_bytes(pid) / 2**20,
            "requests": done, "p50_s": statistics.median(window) if window else 0.0,
            "p95_s": q[-1]}


def _fmt(s: dict) -> str:
    return (f"t={s['t_s']:7.1f}s rss={s['rss_mib']:8.1f} MiB requests={s['requests']:6d} "
            f"p50={s['p50_s']:.2f}s p95={s['p95_s']:.2f}s")


def summarize(samples: list[dict]) -> dict:
    """RSS slope over the second half (after warm-up), MiB per minute."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return {"rss_slope_mib_per_min": 0.0, "rss_first": 0.0, "rss_last": 0.0}
    xs = [s["t_s"] / 60 for s in half]
    ys = [s["rss_mib"] for s in half]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-9, sum((x - mx) ** 2 for x in xs))
    return {"rss_slope_mib_per_min": slope, "rss_first": samples[0]["rss_mib"],
            "rss_last": samples[-1]["rss_mib"], "rss_max": max(s["rss_mib"] for s in samples)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--model", default=None)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--server-args", default="--cache-bytes 268435456",
                    help="extra server flags (default: a 256 MiB KV budget, so the prefix cache "
                         "fills and starts evicting within minutes)")
    args = ap.parse_args(argv)
    install_handlers()
    env, blas = bench_env()
    port = free_port()
    cmd = [sys.executable, "-m", "mlx_server", "--port", str(port), "--max-slots", "4"]
    if args.model:
        cmd += ["--model", args.model]
    cmd += shlex.split(args.server_args)
    run_id = time.strftime("%Y%m%d-%H%M%S")
    proc = Proc("mlx-server", cmd, env, RESULTS / f"soak-{run_id}.log").start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(proc, base)
        print(f"soak: {args.minutes} min, concurrency {args.concurrency}, {blas}")
        out = run_load(base, proc.pid, args.minutes * 60, args.concurrency, args.interval)
    finally:
        stop_all()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"soak-{run_id}.json").write_text(json.dumps(out, indent=1))
    s = out["summary"]
    print(f"RSS first {s['rss_first']:.0f} MiB, last {s['rss_last']:.0f} MiB, max {s.get('rss_max', 0):.0f}"
          f" MiB; slope over 2nd half {s['rss_slope_mib_per_min']:+.2f} MiB/min; errors {out['n_errors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
