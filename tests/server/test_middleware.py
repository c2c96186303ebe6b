"""Request ids, API keys and CORS."""

from __future__ import annotations

import pytest

from mlx_server.config import AppConfig, ServerConfig

from .conftest import CHAT, USER_HI
from .fake_engine import FakeEngine


async def test_request_id_generated(client):
    r = await client.get("/health")
    assert len(r.headers["x-request-id"]) == 32


@pytest.mark.parametrize("given, kept", [
    ("abc-123_X.y:z", True),
    ("a" * 128, True),
    ("a" * 129, False),
    ("has space", False),
    ("<script>", False),
    ("", False),
])
async def test_request_id_accepted_only_when_safe(client, given, kept):
    r = await client.get("/health", headers={"x-request-id": given})
    assert (r.headers["x-request-id"] == given) is kept


async def test_request_id_on_errors_and_streams(client):
    r = await client.get("/nope", headers={"x-request-id": "r1"})
    assert r.headers["x-request-id"] == "r1"
    r = await client.post(CHAT, json={"messages": USER_HI, "stream": True, "max_tokens": 1},
                          headers={"x-request-id": "r2"})
    assert r.headers["x-request-id"] == "r2"


async def test_api_keys(make_client):
    config = AppConfig(server=ServerConfig(api_keys=("k1", "k2")))
    async with make_client(FakeEngine(), config) as c:
        r = await c.post(CHAT, json={"messages": USER_HI})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = await c.post(CHAT, json={"messages": USER_HI},
                         headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401
        for key in ("k1", "k2"):
            r = await c.post(CHAT, json={"messages": USER_HI, "max_tokens": 1},
                             headers={"authorization": f"Bearer {key}"})
            assert r.status_code == 200
        # Public, as in llama-server.
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/v1/models")).status_code == 200


async def test_cors(make_client):
    config = AppConfig(server=ServerConfig(cors_origins=("http://ui.example",)))
    async with make_client(FakeEngine(), config) as c:
        r = await c.options(CHAT, headers={"origin": "http://ui.example",
                                           "access-control-request-method": "POST"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://ui.example"
        r = await c.get("/nope", headers={"origin": "http://ui.example"})
        assert r.headers["access-control-allow-origin"] == "http://ui.example"
