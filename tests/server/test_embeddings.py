"""POST /v1/embeddings over HTTP, on a real embedding engine (a tiny random-weight Qwen3
embedder built by the test) beside the fake generation engine."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from tiny_embedder import MAX_SEQ_LENGTH, running_embedder

from mlx_server.config import AppConfig
from mlx_server.server import create_app

from .conftest import CHAT, USER_HI, assert_schema
from .fake_engine import FakeEngine

URL = "/v1/embeddings"
TEXTS = ["The quick brown fox.", "Hello world!", "Paris is the capital of France."]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    yield from running_embedder(tmp_path_factory.mktemp("emb"))


def _client(engine, embeddings, generation=True) -> httpx.AsyncClient:
    app = create_app(engine, AppConfig(), embeddings=embeddings, generation=generation)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app, raise_app_exceptions=False),
                             base_url="http://testserver")


@pytest.fixture
async def client(embedder):
    async with _client(FakeEngine(), lambda: embedder) as c:
        yield c


def _vectors(body) -> np.ndarray:
    return np.array([d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])])


def _error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    if param is not None:
        assert err["param"] == param, err
    return err


async def test_float_response_shape_schema_and_usage(client, embedder):
    r = await client.post(URL, json={"input": TEXTS, "model": "tiny-embed"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_schema("CreateEmbeddingResponse", body)
    assert body["model"] == "tiny-embed" and [d["index"] for d in body["data"]] == [0, 1, 2]
    vecs = _vectors(body)
    assert vecs.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    n_tokens = sum(len(s) for s in embedder.tokenize(TEXTS))
    assert body["usage"] == {"prompt_tokens": n_tokens, "total_tokens": n_tokens}


async def test_base64_equals_float(client):
    floats = _vectors((await client.post(URL, json={"input": TEXTS})).json())
    r = await client.post(URL, json={"input": TEXTS, "encoding_format": "base64"})
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
                        for d in r.json()["data"]])
    np.testing.assert_array_equal(decoded, floats.astype(np.float32))


async def test_every_input_form_gives_the_same_vectors(client, embedder):
    ids = embedder.tokenize(TEXTS)
    from_texts = _vectors((await client.post(URL, json={"input": TEXTS})).json())
    from_ids = _vectors((await client.post(URL, json={"input": ids})).json())
    one_text = _vectors((await client.post(URL, json={"input": TEXTS[1]})).json())
    one_ids = _vectors((await client.post(URL, json={"input": ids[1]})).json())
    np.testing.assert_allclose(from_ids, from_texts, atol=1e-6)
    np.testing.assert_allclose(one_text[0], from_texts[1], atol=1e-5)
    np.testing.assert_allclose(one_ids[0], from_texts[1], atol=1e-5)


async def test_dimensions(client):
    full = _vectors((await client.post(URL, json={"input": TEXTS[0]})).json())[0]
    cut = _vectors((await client.post(URL, json={"input": TEXTS[0], "dimensions": 16})).json())[0]
    np.testing.assert_allclose(cut, full[:16] / np.linalg.norm(full[:16]), atol=1e-6)
    r = await client.post(URL, json={"input": TEXTS[0], "dimensions": 20})
    assert "16, 32" in _error(r, 400, "dimensions")["message"]
    _error(await client.post(URL, json={"input": "x", "dimensions": 0}), 400, "dimensions")


async def test_over_length_is_a_400_unless_truncate(client, embedder):
    long = "The quick brown fox jumps over the lazy dog. " * 20
    err = _error(await client.post(URL, json={"input": ["ok", long]}), 400, "input.1")
    assert err["code"] == "context_length_exceeded" and str(MAX_SEQ_LENGTH) in err["message"]
    r = await client.post(URL, json={"input": ["ok", long], "truncate": True})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 2 + MAX_SEQ_LENGTH
    cut = embedder.tokenize([long], truncate=True)
    expected = _vectors((await client.post(URL, json={"input": cut})).json())[0]
    np.testing.assert_allclose(_vectors(r.json())[1], expected, atol=1e-6)
    long_ids = embedder.tokenize([long])[0]
    _error(await client.post(URL, json={"input": long_ids}), 400, "input.0")
    r = await client.post(URL, json={"input": long_ids, "truncate": True})
    assert r.json()["usage"]["prompt_tokens"] == MAX_SEQ_LENGTH


@pytest.mark.parametrize("body, param", [
    ({"input": []}, "input"),
    ({"input": ""}, "input.0"),
    ({"input": ["a", ""]}, "input.1"),
    ({"input": [[1, 2], []]}, "input.1"),
    ({"input": [[1, 2], [10**7]]}, "input.1"),
    ({"input": ["x"] * 2049}, "input"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "pooling": "cls"}, "pooling"),
    ({"input": 3}, "input"),
    ({}, "input"),
])
async def test_invalid_requests_are_openai_400s(client, body, param):
    _error(await client.post(URL, json=body), 400, param)


async def test_models_lists_both(client):
    ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
    assert ids == ["fake-model", "tiny-embed"]
    assert (await client.get("/v1/models/tiny-embed")).status_code == 200


async def test_without_an_embedding_model_it_is_a_404():
    async with _client(FakeEngine(), None) as c:
        err = _error(await c.post(URL, json={"input": "x"}), 404)
        assert "--embedding-model" in err["message"]


async def test_loading_is_a_503():
    async with _client(FakeEngine(), lambda: None) as c:
        r = await c.post(URL, json={"input": "x"})
        assert r.status_code == 503 and r.headers["retry-after"]


async def test_embedding_mode_refuses_generation(embedder):
    async with _client(lambda: None, lambda: embedder, generation=False) as c:
        err = _error(await c.post(CHAT, json={"messages": USER_HI}), 501)
        assert "--embedding" in err["message"] and err["type"] == "not_supported_error"
        assert [m["id"] for m in (await c.get("/v1/models")).json()["data"]] == ["tiny-embed"]
        assert (await c.post(URL, json={"input": "x"})).status_code == 200
