"""Fixtures: a fake engine, the app in-process (httpx + ASGITransport), the app behind a
real uvicorn on a loopback port (for the official SDK and real disconnects), and
validation against OpenAI's published response schemas."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import uvicorn

from mlx_server.config import AppConfig, ServerConfig
from mlx_server.server import create_app

from .fake_engine import FakeEngine

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER_HI = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def make_client() -> Iterator[Callable[..., httpx.AsyncClient]]:
    """`make_client(engine_or_provider, config=None)` → an httpx client on a fresh app."""
    clients: list[httpx.AsyncClient] = []

    def make(source: Any, config: AppConfig | None = None) -> httpx.AsyncClient:
        app = create_app(source, config or AppConfig())
        # raise_app_exceptions=False: we assert on the 500 the app sends, not the exception.
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        clients.append(client)
        return client

    yield make


@pytest.fixture
async def client(engine: FakeEngine, make_client: Callable[..., httpx.AsyncClient]
                 ) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(engine) as c:
        yield c


def sse_payloads(text: str) -> list[Any]:
    """The JSON payloads of an SSE body, asserting the framing and the final [DONE]."""
    events = text.split("\n\n")
    assert events[-1] == "", "the stream must end with a blank line"
    assert events[-2] == "data: [DONE]"
    payloads = []
    for e in events[:-2]:
        assert e.startswith("data: ") and "\n" not in e, e
        payloads.append(json.loads(e[len("data: "):]))
    return payloads


# ---------------------------------------------------------------- OpenAI's schemas

_SCHEMAS = json.loads((Path(__file__).parent / "openai_schemas.json").read_text())


def schema_errors(name: str, body: Any) -> list[jsonschema.ValidationError]:
    schema = {"$defs": _SCHEMAS["$defs"], "$ref": f"#/$defs/{name}"}
    validator = jsonschema.Draft202012Validator(schema)
    return list(validator.iter_errors(body))


def assert_schema(name: str, body: Any) -> None:
    errors = schema_errors(name, body)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


# ---------------------------------------------------------------- a real server


class LiveServer:
    """uvicorn in a thread; tests swap `engine` (the app reads it through a provider)."""

    def __init__(self, config: AppConfig):
        self.engine: FakeEngine | None = FakeEngine()
        app = create_app(lambda: self.engine, config)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="session")
def live_server_session() -> Iterator[LiveServer]:
    config = AppConfig(server=ServerConfig(max_body_bytes=64 * 1024))
    with LiveServer(config) as server:
        yield server


@pytest.fixture
def live(live_server_session: LiveServer) -> LiveServer:
    live_server_session.engine = FakeEngine()
    return live_server_session


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
