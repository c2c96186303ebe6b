"""The embedding engine: a batcher on its own thread behind `EmbeddingClient`."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from tiny_embedder import MAX_SEQ_LENGTH

from mlx_server.embeddings.engine import EmbeddingEngine
from mlx_server.engine.types import (
    EmbeddingRequest,
    InvalidRequestError,
    ModelLoadError,
    QueueFullError,
)


@pytest.fixture(scope="module")
def engine(qwen3_embedder):
    eng = EmbeddingEngine(lambda: qwen3_embedder, "tiny-embed", max_batch_tokens=256).start()
    assert eng.wait_ready(60)
    yield eng
    eng.shutdown()


def _req(seqs, dimensions=None, rid="r"):
    return EmbeddingRequest(rid, tuple(tuple(s) for s in seqs), dimensions)


def _seqs(engine, n, seed=0):
    rng = np.random.default_rng(seed)
    vocab = engine.embedding_info.vocab_size
    return [rng.integers(0, vocab, size=int(rng.integers(1, MAX_SEQ_LENGTH))).tolist()
            for _ in range(n)]


def test_info(engine):
    info = engine.embedding_info
    assert (info.id, info.dim, info.max_length, info.pooling) == ("tiny-embed", 64, 48, "last")
    assert engine.health().ok


async def test_concurrent_requests_share_batches_and_match_one_by_one(engine, qwen3_embedder):
    seqs = _seqs(engine, 24)
    before = engine.stats()["batches"]
    results = await asyncio.gather(*(engine.embed(_req([s], rid=str(i)))
                                     for i, s in enumerate(seqs)))
    assert engine.stats()["batches"] - before < len(seqs)
    for s, got in zip(seqs, results):
        np.testing.assert_allclose(got[0], qwen3_embedder.embed([s])[0], atol=1e-5)


async def test_one_request_with_many_inputs_keeps_their_order(engine, qwen3_embedder):
    seqs = _seqs(engine, 40, seed=1)  # more than one batch under the 256-token budget
    got = await engine.embed(_req(seqs))
    expected = np.concatenate([qwen3_embedder.embed([s]) for s in seqs])
    np.testing.assert_allclose(got, expected, atol=1e-5)


async def test_dimensions_cut_and_renormalize(engine):
    seq = _seqs(engine, 1)[0]
    full = (await engine.embed(_req([seq])))[0]
    cut = (await engine.embed(_req([seq], dimensions=16)))[0]
    assert cut.shape == (16,)
    np.testing.assert_allclose(cut, full[:16] / np.linalg.norm(full[:16]), atol=1e-6)
    with pytest.raises(InvalidRequestError) as e:
        await engine.embed(_req([seq], dimensions=20))  # not one of its Matryoshka sizes
    assert e.value.param == "dimensions"


@pytest.mark.parametrize("seq, param", [([], "input.1"), ([1] * (MAX_SEQ_LENGTH + 1), "input.1"),
                                        ([10**6], "input.1"), ([-1], "input.1")])
async def test_invalid_inputs(engine, seq, param):
    with pytest.raises(InvalidRequestError) as e:
        await engine.embed(_req([[1, 2], seq]))
    assert e.value.param == param


def test_tokenize_truncates_only_when_asked(engine):
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert len(engine.tokenize([text])[0]) > MAX_SEQ_LENGTH
    assert len(engine.tokenize([text], truncate=True)[0]) == MAX_SEQ_LENGTH


async def test_queue_full(qwen3_embedder):
    eng = EmbeddingEngine(lambda: qwen3_embedder, "q", max_queue=2).start()
    try:
        assert eng.wait_ready(60)
        with pytest.raises(QueueFullError):
            await eng.embed(_req([[1], [2], [3]]))
    finally:
        eng.shutdown()


async def test_a_cancelled_request_does_not_disturb_others(engine):
    seqs = _seqs(engine, 30, seed=2)
    task = asyncio.ensure_future(engine.embed(_req(seqs, rid="gone")))
    await asyncio.sleep(0)
    task.cancel()
    got = await engine.embed(_req(seqs[:2], rid="kept"))
    assert got.shape == (2, 64)


def test_load_failure_is_reported_by_health():
    def fail():
        raise ModelLoadError("no such model")

    eng = EmbeddingEngine(fail, "x").start()
    assert not eng.wait_ready(10)
    assert eng.health().status == "error" and eng.health().detail == "no such model"
