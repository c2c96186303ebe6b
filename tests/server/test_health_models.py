"""GET /health (llama-server's bodies), the loading gate, and /v1/models."""

from __future__ import annotations

import pytest

from mlx_server.engine.types import Health

from .conftest import CHAT, COMPLETIONS, USER_HI, assert_schema
from .fake_engine import FakeEngine

LOADING = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}


async def test_health_while_loading_then_ready(make_client):
    holder: dict[str, FakeEngine | None] = {"engine": None}
    async with make_client(lambda: holder["engine"]) as c:
        for path in ("/health", "/v1/health"):
            r = await c.get(path)
            assert (r.status_code, r.json()) == (503, LOADING)
        for method, path, body in [("POST", CHAT, {"messages": USER_HI}),
                                   ("POST", COMPLETIONS, {"prompt": "x"}),
                                   ("GET", "/v1/models", None)]:
            r = await c.request(method, path, json=body)
            assert r.status_code == 503, path
            assert r.json()["error"]["message"] == "Loading model"
            assert "retry-after" in r.headers
            assert_schema("ErrorResponse", r.json())
        holder["engine"] = FakeEngine()
        r = await c.get("/health")
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        assert (await c.post(CHAT, json={"messages": USER_HI})).status_code == 200


async def test_engine_that_says_loading_is_gated_too(make_client):
    engine = FakeEngine(state=Health(ok=False, status="loading", detail="Loading model"))
    async with make_client(engine) as c:
        assert (await c.get("/health")).json() == LOADING
        assert (await c.post(CHAT, json={"messages": USER_HI})).status_code == 503


@pytest.mark.parametrize("status, detail", [("wedged", "no engine progress for 75s"),
                                            ("error", "the engine thread has stopped")])
async def test_health_when_broken(make_client, status, detail):
    engine = FakeEngine(state=Health(ok=False, status=status, detail=detail))
    async with make_client(engine) as c:
        r = await c.get("/health")
        assert r.status_code == 503
        assert r.json() == {"error": {"code": 503, "message": detail,
                                      "type": "unavailable_error"}}


async def test_failed_load_reported_through_health_source(make_client):
    """The lead's wiring: provider None until ready, health from the engine all along."""
    import httpx

    from mlx_server.config import AppConfig
    from mlx_server.server import create_app

    failed = Health(ok=False, status="error", detail="could not read weights")
    app = create_app(lambda: None, AppConfig(), health=lambda: failed)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        r = await c.get("/health")
        assert r.status_code == 503 and r.json()["error"]["message"] == "could not read weights"
        r = await c.post(CHAT, json={"messages": USER_HI})
        assert r.status_code == 503 and r.json()["error"]["message"] == "could not read weights"


async def test_health_check_that_raises(make_client):
    engine = FakeEngine()
    engine.health = lambda: 1 / 0  # type: ignore[method-assign]
    async with make_client(engine) as c:
        assert (await c.get("/health")).status_code == 503


async def test_models(client):
    for path in ("/v1/models", "/models"):
        r = await client.get(path)
        assert r.status_code == 200
        assert_schema("ListModelsResponse", r.json())
        assert r.json()["data"] == [{"id": "fake-model", "created": 1700000000,
                                     "object": "model", "owned_by": "mlx-server"}]
    r = await client.get("/v1/models/fake-model")
    assert_schema("Model", r.json())
    assert r.json()["id"] == "fake-model"


async def test_model_ids_with_slashes(make_client):
    async with make_client(FakeEngine(model_id="mlx-community/Qwen3-0.6B-4bit")) as c:
        r = await c.get("/v1/models/mlx-community/Qwen3-0.6B-4bit")
        assert r.status_code == 200 and r.json()["id"] == "mlx-community/Qwen3-0.6B-4bit"
