"""A client that goes away must stop its generation in the engine.

In-process, raw ASGI calls control exactly when `http.disconnect` arrives (httpx's
ASGITransport buffers whole responses, so it cannot disconnect mid-stream); against a
real uvicorn, closing the socket must have the same effect.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from mlx_server.config import AppConfig
from mlx_server.server import create_app

from .conftest import CHAT, COMPLETIONS, USER_HI, wait_for
from .fake_engine import FakeEngine

# Without an abort these would run for 2000 tokens x 5 ms = 10 s.
ENDLESS = {"ignore_eos": True, "max_tokens": 2000}


def slow_engine() -> FakeEngine:
    return FakeEngine(delay_s=0.005, ctx_size=100_000)


async def call_asgi(app: Any, path: str, body: dict, disconnect_when: Callable[[list], bool],
                    gone: asyncio.Event | None = None) -> list[dict]:
    """Run one request; `receive` reports a disconnect once `disconnect_when(sent)` holds
    (checked as the app sends) or `gone` is set."""
    raw = json.dumps(body).encode()
    sent: list[dict] = []
    gone = gone or asyncio.Event()
    body_given = False

    async def receive() -> dict:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if disconnect_when(sent):
            gone.set()

    if disconnect_when(sent):
        gone.set()
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(raw)).encode())],
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    return sent


def content_chunks(sent: list[dict]) -> int:
    return sum(1 for m in sent if m["type"] == "http.response.body" and b"content" in m["body"])


async def test_stream_disconnect_aborts():
    engine = slow_engine()
    app = create_app(engine, AppConfig())
    start = time.monotonic()
    sent = await call_asgi(app, CHAT, {"messages": USER_HI, "stream": True, **ENDLESS},
                           lambda sent: content_chunks(sent) >= 3)
    assert time.monotonic() - start < 2
    assert sent[0]["status"] == 200
    assert len(engine.aborted) == 1 and not engine.finished


async def test_stream_disconnect_aborts_every_choice():
    engine = slow_engine()
    app = create_app(engine, AppConfig())
    await call_asgi(app, CHAT, {"messages": USER_HI, "stream": True, "n": 3, **ENDLESS},
                    lambda sent: content_chunks(sent) >= 5)
    assert len(engine.aborted) == 3 and not engine.finished


async def test_completions_stream_disconnect_aborts():
    engine = slow_engine()
    app = create_app(engine, AppConfig())
    await call_asgi(app, COMPLETIONS, {"prompt": "x", "stream": True, **ENDLESS},
                    lambda sent: len(sent) >= 3)
    assert len(engine.aborted) == 1 and not engine.finished


async def test_disconnect_before_the_first_chunk():
    engine = slow_engine()
    app = create_app(engine, AppConfig())
    await call_asgi(app, CHAT, {"messages": USER_HI, "stream": True, **ENDLESS},
                    lambda sent: True)
    assert len(engine.aborted) == 1 and not engine.finished


async def test_non_stream_disconnect_aborts():
    engine = slow_engine()
    app = create_app(engine, AppConfig())
    gone = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, gone.set)
    start = time.monotonic()
    sent = await call_asgi(app, CHAT, {"messages": USER_HI, "n": 2, **ENDLESS},
                           lambda sent: False, gone)
    assert time.monotonic() - start < 2
    assert len(engine.aborted) == 2 and not engine.finished
    assert sent[0]["status"] == 499  # nobody reads it; it only shows in access logs


# ---------------------------------------------------------------- over a real socket


def test_live_stream_disconnect_aborts(live):
    live.engine = slow_engine()
    body = {"messages": USER_HI, "stream": True, **ENDLESS}
    with httpx.Client(base_url=live.url, timeout=5) as c, c.stream("POST", CHAT, json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
    # Leaving the `with` closed the connection mid-stream.
    assert wait_for(lambda: len(live.engine.aborted) == 1)
    assert not live.engine.finished


def test_live_non_stream_disconnect_aborts(live):
    live.engine = slow_engine()
    with httpx.Client(base_url=live.url, timeout=0.3) as c:
        try:
            c.post(CHAT, json={"messages": USER_HI, **ENDLESS})
        except httpx.ReadTimeout:
            pass
        else:
            raise AssertionError("the request should have outlived the client's timeout")
    assert wait_for(lambda: len(live.engine.aborted) == 1)
    assert not live.engine.finished
