"""Streaming OpenAI-compatible client used for every HTTP measurement.

One request = one ``RequestResult``: TTFT is the time from just before the request
is sent to the first SSE chunk that carries content (``delta.content``,
``delta.reasoning_content`` or ``text``); inter-token latencies (ITL) are the gaps
between consecutive content-bearing chunks. Output tokens come from the final
``usage`` chunk (``stream_options.include_usage``), else from the number of
content chunks.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from bench.stats import pct


@dataclass
class RequestResult:
    ok: bool = False
    error: str | None = None
    status: int | None = None
    t_start: float = 0.0  # perf_counter, absolute
    ttft: float | None = None  # s
    latency: float | None = None  # s, start -> last byte
    itls: list[float] = field(default_factory=list)  # s
    content_chunks: int = 0
    completion_tokens: int | None = None  # from usage
    prompt_tokens: int | None = None  # from usage
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens
    finish_reason: str | None = None
    text: str = ""

    @property
    def output_tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else self.content_chunks

    @property
    def t_end(self) -> float:
        return self.t_start + (self.latency or 0.0)

    @property
    def decode_time(self) -> float | None:
        """Seconds from the first to the last content chunk."""
        if self.ttft is None or not self.itls:
            return None
        return sum(self.itls)

    @property
    def decode_tps(self) -> float | None:
        """Decode rate after the first token: (tokens - 1) / (t_last - t_first)."""
        dt = self.decode_time
        if not dt or self.output_tokens < 2:
            return None
        return (self.output_tokens - 1) / dt

    def summary(self, keep_text: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d.pop("itls")
        if not keep_text:
            d.pop("text")
        d["output_tokens"] = self.output_tokens
        d["decode_tps"] = self.decode_tps
        d["itl_p50"] = pct(self.itls, 50)
        d["itl_p95"] = pct(self.itls, 95)
        d["itl_max"] = max(self.itls) if self.itls else None
        return d


def _chunk_content(obj: dict[str, Any]) -> str:
    out = []
    for ch in obj.get("choices") or []:
        delta = ch.get("delta")
        if isinstance(delta, dict):
            for key in ("content", "reasoning_content", "reasoning"):
                v = delta.get(key)
                if isinstance(v, str) and v:
                    out.append(v)
            if delta.get("tool_calls"):
                out.append(json.dumps(delta["tool_calls"]))
        t = ch.get("text")
        if isinstance(t, str) and t:
            out.append(t)
    return "".join(out)


def _finish_reason(obj: dict[str, Any]) -> str | None:
    for ch in obj.get("choices") or []:
        if ch.get("finish_reason"):
            return ch["finish_reason"]
    return None


async def stream_request(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    timeout: float = 600.0,
) -> RequestResult:
    """POST ``payload`` (``stream`` is forced on) and time the SSE stream."""
    payload = dict(payload, stream=True)
    payload.setdefault("stream_options", {"include_usage": True})
    res = RequestResult()
    res.t_start = t0 = time.perf_counter()
    last_content: float | None = None
    parts: list[str] = []
    try:
        async with client.stream("POST", url, json=payload, timeout=timeout) as r:
            res.status = r.status_code
            if r.status_code != 200:
                body = (await r.aread()).decode("utf-8", "replace")
                res.error = f"HTTP {r.status_code}: {body[:300]}"
                return res
            done = False
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                now = time.perf_counter()
                try:
                    obj = json.loads(data)
                except json.JSONDecodeError:
                    continue
                if "error" in obj and not obj.get("choices"):
                    res.error = f"stream error: {str(obj['error'])[:300]}"
                    return res
                text = _chunk_content(obj)
                if text:
                    if last_content is None:
                        res.ttft = now - t0
                    else:
                        res.itls.append(now - last_content)
                    last_content = now
                    res.content_chunks += 1
                    parts.append(text)
                fr = _finish_reason(obj)
                if fr:
                    res.finish_reason = fr
                usage = obj.get("usage")
                if isinstance(usage, dict):
                    if usage.get("completion_tokens") is not None:
                        res.completion_tokens = int(usage["completion_tokens"])
                    if usage.get("prompt_tokens") is not None:
                        res.prompt_tokens = int(usage["prompt_tokens"])
                    details = usage.get("prompt_tokens_details") or {}
                    if isinstance(details, dict) and details.get("cached_tokens") is not None:
                        res.cached_tokens = int(details["cached_tokens"])
            res.latency = time.perf_counter() - t0
            res.text = "".join(parts)
            if res.ttft is None:
                res.error = "no content chunk in stream"
            elif not done:
                res.error = "stream ended without [DONE]"
                # still usable: keep timings but flag it
                res.ok = True
            else:
                res.ok = True
    except (httpx.HTTPError, OSError, asyncio.TimeoutError) as e:
        res.latency = time.perf_counter() - t0
        res.error = f"{type(e).__name__}: {e}"[:300]
    return res


def make_client(max_connections: int = 64) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    # trust_env=False: never route loopback through a proxy from the environment.
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600.0), trust_env=False)


async def run_closed_loop(
    url: str,
    payloads: list[dict[str, Any]],
    concurrency: int,
    timeout: float = 600.0,
) -> tuple[list[RequestResult], float]:
    """``concurrency`` workers send ``payloads`` back to back (each worker takes the
    next unsent payload as soon as its previous request finishes).
    Returns (results in payload order, wall seconds from first send to last end)."""
    queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
    for i, p in enumerate(payloads):
        queue.put_nowait((i, p))
    results: list[RequestResult | None] = [None] * len(payloads)
    async with make_client(max(concurrency, 1) * 2) as client:

        async def worker() -> None:
            while True:
                try:
                    i, p = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                results[i] = await stream_request(client, url, p, timeout)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return [r for r in results if r is not None], wall


def aggregate(results: list[RequestResult], wall: float) -> dict[str, Any]:
    """Throughput and latency percentiles over a batch of requests."""
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    itls = [x for r in ok for x in r.itls]
    out_tokens = sum(r.output_tokens for r in ok)
    dec = [r.decode_tps for r in ok if r.decode_tps]
    return {
        "requests": len(results),
        "failures": len(results) - len(ok),
        "errors": sorted({r.error for r in results if r.error})[:5],
        "wall_s": wall,
        "output_tokens": out_tokens,
        "output_tokens_per_request": [r.output_tokens for r in ok],
        "prompt_tokens_p50": pct([r.prompt_tokens for r in ok if r.prompt_tokens is not None], 50),
        "agg_tok_s": out_tokens / wall if wall > 0 else None,
        "ttft_p50": pct(ttfts, 50),
        "ttft_p95": pct(ttfts, 95),
        "itl_p50": pct(itls, 50),
        "itl_p95": pct(itls, 95),
        "per_request_decode_tps_p50": pct(dec, 50),
    }
