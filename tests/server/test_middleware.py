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
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == "invalid_request_error"
        for wrong in ("Bearer wrong", "Bearer k1x", "Bearer k", "Basic k1", "Bearer "):
            r = await c.post(CHAT, json={"messages": USER_HI}, headers={"authorization": wrong})
            assert r.status_code == 401, wrong
        for key in ("k1", "k2"):
            r = await c.post(CHAT, json={"messages": USER_HI, "max_tokens": 1},
                             headers={"authorization": f"Bearer {key}"})
            assert r.status_code == 200
        r = await c.get("/v1/models", headers={"x-api-key": "k2"})
        assert r.status_code == 200
        # Only the probe is public; everything else needs a key (llama-server's /metrics
        # is public unless --metrics-api-key protects it).
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/metrics")).status_code == 200
        for path in ("/v1/models", "/slots", "/props", "/nope"):
            assert (await c.get(path)).status_code == 401, path
        assert (await c.post("/tokenize", json={"content": "a"})).status_code == 401


async def test_metrics_api_key(make_client):
    config = AppConfig(server=ServerConfig(api_keys=("k1",), metrics_api_keys=("m1",)))
    async with make_client(FakeEngine(), config) as c:
        assert (await c.get("/metrics")).status_code == 401
        for key in ("m1", "k1"):
            r = await c.get("/metrics", headers={"authorization": f"Bearer {key}"})
            assert r.status_code == 200
        # The metrics key opens /metrics only.
        r = await c.get("/v1/models", headers={"authorization": "Bearer m1"})
        assert r.status_code == 401


async def test_metrics_key_without_api_keys(make_client):
    config = AppConfig(server=ServerConfig(metrics_api_keys=("m1",)))
    async with make_client(FakeEngine(), config) as c:
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/v1/models")).status_code == 200


async def test_cors_is_off_by_default(client):
    r = await client.options(CHAT, headers={"origin": "http://evil.example",
                                            "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    r = await client.get("/health", headers={"origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


async def test_cors(make_client):
    config = AppConfig(server=ServerConfig(cors_origins=("http://ui.example",)))
    async with make_client(FakeEngine(), config) as c:
        r = await c.options(CHAT, headers={"origin": "http://ui.example",
                                           "access-control-request-method": "POST"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://ui.example"
        r = await c.get("/nope", headers={"origin": "http://ui.example"})
        assert r.headers["access-control-allow-origin"] == "http://ui.example"
        r = await c.get("/nope", headers={"origin": "http://other.example"})
        assert "access-control-allow-origin" not in r.headers
