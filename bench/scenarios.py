"""The HTTP scenarios. Each takes an ``Endpoint`` (base URL + request conventions)
and returns a JSON-able dict. Every request carries a unique tag at the very start
of its prompt, so no server can answer from a cached prefix unless the scenario
means it to (multi-turn)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench import prompts
from bench.client import aggregate, make_client, run_closed_loop, stream_request
from bench.stats import median


@dataclass
class Config:
    prompt_tokens: int = 100
    single_max_tokens: int = 128
    single_reps: int = 3
    levels: list[int] = field(default_factory=lambda: [1, 4, 8, 16])
    requests_per_client: int = 2
    sweep_max_tokens: int = 64
    system_tokens: int = 500
    turns: int = 6
    turn_max_tokens: int = 32
    raw_max_tokens: int = 128
    raw_reps: int = 3
    request_timeout: float = 900.0

    @classmethod
    def quick(cls) -> "Config":
        return cls(
            single_max_tokens=32,
            single_reps=2,
            levels=[1, 4, 8],
            requests_per_client=1,
            sweep_max_tokens=32,
            turns=3,
            turn_max_tokens=16,
            raw_max_tokens=32,
            raw_reps=2,
        )


@dataclass
class Endpoint:
    base_url: str
    model_field: str | None = None  # value of the "model" field; None = omit it
    api: str = "completions"  # "completions" (/v1/completions) or "chat"
    ignore_eos: bool = True  # send "ignore_eos": true (dropped if the server rejects it)
    notes: list[str] = field(default_factory=list)

    def url(self, api: str | None = None) -> str:
        api = api or self.api
        return self.base_url + ("/v1/completions" if api == "completions" else "/v1/chat/completions")

    def payload(self, *, prompt: str | None = None, messages: list[dict] | None = None,
                max_tokens: int, api: str | None = None) -> dict[str, Any]:
        api = api or self.api
        p: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0.0, "stream": True,
                             "stream_options": {"include_usage": True}}
        if self.model_field is not None:
            p["model"] = self.model_field
        if self.ignore_eos:
            p["ignore_eos"] = True
        if api == "completions":
            assert prompt is not None
            p["prompt"] = prompt
        else:
            p["messages"] = messages if messages is not None else [{"role": "user", "content": prompt}]
        return p


def _tag() -> str:
    return uuid.uuid4().hex[:12]


async def probe(ep: Endpoint, timeout: float = 900.0) -> dict[str, Any]:
    """Warm the server up with one short request, and settle the request
    conventions: fall back to chat if /v1/completions is missing, drop
    ignore_eos if it is rejected. The first request may wait for model loading."""
    info: dict[str, Any] = {}
    async with make_client(2) as c:
        for _ in range(3):
            r = await stream_request(c, ep.url(), ep.payload(prompt="Hello, my name is", max_tokens=4), timeout)
            if r.ok:
                break
            if r.status in (404, 405) and ep.api == "completions":
                ep.api = "chat"
                ep.notes.append("/v1/completions unavailable: used chat completions for all scenarios")
                continue
            if r.status in (400, 422) and ep.ignore_eos:
                ep.ignore_eos = False
                ep.notes.append(f"server rejected ignore_eos ({r.error}); sent without it")
                continue
            break
        info["warmup"] = r.summary(keep_text=True)
        if not r.ok:
            raise RuntimeError(f"warm-up request failed: {r.error}")
        # The chat endpoint must work too for the multi-turn scenario.
        rc = await stream_request(
            c, ep.url("chat"), ep.payload(prompt="Hello!", max_tokens=4, api="chat"), timeout
        )
        info["chat_warmup"] = rc.summary(keep_text=True)
        if not rc.ok and rc.status in (400, 422) and ep.ignore_eos:
            ep.ignore_eos = False
            ep.notes.append("server rejected ignore_eos on chat; sent without it")
    info["usage_reported"] = r.completion_tokens is not None
    if not info["usage_reported"]:
        ep.notes.append("no usage chunk: output tokens counted as content chunks")
    info["api"] = ep.api
    info["ignore_eos"] = ep.ignore_eos
    return info


async def single_stream(ep: Endpoint, cfg: Config, count: prompts.Counter, log=print) -> dict[str, Any]:
    base = prompts.story_prompt(cfg.prompt_tokens, count)
    runs = []
    async with make_client(2) as c:
        for i in range(cfg.single_reps):
            r = await stream_request(
                c, ep.url(), ep.payload(prompt=prompts.tagged(base, _tag()), max_tokens=cfg.single_max_tokens),
                cfg.request_timeout,
            )
            runs.append(r)
            log(f"    single rep {i + 1}/{cfg.single_reps}: ttft={_ms(r.ttft)} ms "
                f"decode={_f(r.decode_tps)} tok/s tokens={r.output_tokens} {r.error or ''}")
    ok = [r for r in runs if r.ok]
    return {
        "max_tokens": cfg.single_max_tokens,
        "reps": cfg.single_reps,
        "failures": len(runs) - len(ok),
        "prompt_tokens": median(r.prompt_tokens for r in ok),
        "output_tokens": [r.output_tokens for r in ok],
        "ttft_median": median(r.ttft for r in ok),
        "decode_tps_median": median(r.decode_tps for r in ok),
        "e2e_tps_median": median(r.output_tokens / r.latency for r in ok if r.latency),
        "itl_median": median(x for r in ok for x in r.itls),
        "runs": [r.summary() for r in runs],
    }


async def sweep(ep: Endpoint, cfg: Config, count: prompts.Counter, log=print) -> dict[str, Any]:
    base = prompts.story_prompt(cfg.prompt_tokens, count)
    levels = []
    for n in cfg.levels:
        payloads = [
            ep.payload(prompt=prompts.tagged(base, _tag()), max_tokens=cfg.sweep_max_tokens)
            for _ in range(max(2, cfg.requests_per_client * n))
        ]
        results, wall = await run_closed_loop(ep.url(), payloads, n, cfg.request_timeout)
        agg = aggregate(results, wall)
        agg["concurrency"] = n
        agg["max_tokens"] = cfg.sweep_max_tokens
        agg["runs"] = [r.summary() for r in results]
        levels.append(agg)
        log(f"    N={n:>2}: {agg['agg_tok_s'] or 0:7.2f} tok/s  ttft p50={_ms(agg['ttft_p50'])} "
            f"p95={_ms(agg['ttft_p95'])} ms  itl p50={_ms(agg['itl_p50'])} p95={_ms(agg['itl_p95'])} ms  "
            f"fail={agg['failures']}")
    return {"levels": levels}


async def multiturn(ep: Endpoint, cfg: Config, count: prompts.Counter, log=print) -> dict[str, Any]:
    sys_base = prompts.system_prompt(cfg.system_tokens, count)
    messages: list[dict[str, str]] = [{"role": "system", "content": prompts.tagged(sys_base, _tag())}]
    turns = []
    url = ep.url("chat")
    async with make_client(2) as c:
        for t in range(cfg.turns):
            messages.append({"role": "user", "content": prompts.USER_TURNS[t % len(prompts.USER_TURNS)]})
            r = await stream_request(
                c, url, ep.payload(messages=list(messages), max_tokens=cfg.turn_max_tokens, api="chat"),
                cfg.request_timeout,
            )
            turns.append(r)
            log(f"    turn {t + 1}/{cfg.turns}: prompt={r.prompt_tokens} cached={r.cached_tokens} "
                f"ttft={_ms(r.ttft)} ms tokens={r.output_tokens} {r.error or ''}")
            messages.append({"role": "assistant", "content": r.text})
        # Cold: the last turn's prompt again, with a new tag at the start so no
        # prefix of it can be in any cache.
        cold_msgs = [{"role": "system", "content": prompts.tagged(sys_base, _tag())}] + messages[1:-1]
        rc = await stream_request(
            c, url, ep.payload(messages=cold_msgs, max_tokens=cfg.turn_max_tokens, api="chat"),
            cfg.request_timeout,
        )
        log(f"    cold prefill of last turn: prompt={rc.prompt_tokens} ttft={_ms(rc.ttft)} ms {rc.error or ''}")
    last = turns[-1] if turns else None
    return {
        "turns": [r.summary(keep_text=True) for r in turns],
        "ttft_per_turn": [r.ttft for r in turns],
        "prompt_tokens_per_turn": [r.prompt_tokens for r in turns],
        "cold": rc.summary(),
        "last_turn_ttft": last.ttft if last else None,
        "cold_ttft": rc.ttft,
        "last_over_cold": (last.ttft / rc.ttft) if (last and last.ttft and rc.ttft) else None,
        "failures": sum(not r.ok for r in turns) + (not rc.ok),
    }


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def health_ok(base_url: str) -> bool:
    try:
        with httpx.Client(timeout=5.0, trust_env=False) as c:
            return c.get(base_url + "/health").status_code == 200
    except httpx.HTTPError:
        return False
