"""The embedding model as the HTTP layer sees it: an `EmbeddingClient` backed by a batcher
on its own thread.

Sequences from every waiting request are queued in arrival order (each request's own
sorted by length, so its batches pad little) and embedded in padded batches bounded by a
token budget; concurrent requests share batches.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.types import (
    EmbeddingModelInfo,
    EmbeddingRequest,
    EngineError,
    Health,
    InvalidRequestError,
    ModelLoadError,
    QueueFullError,
)
from ..engine.worker import BackgroundWorker
from .model import EmbeddingModel

log = logging.getLogger("mlx_server.embeddings")


@dataclass
class _Job:
    request: EmbeddingRequest
    out: np.ndarray
    remaining: int
    future: concurrent.futures.Future[np.ndarray]


class EmbeddingEngine(BackgroundWorker):
    """Implements `EmbeddingClient`. Start it, then poll `ready` (or `health()`)."""

    def __init__(
        self, load: Callable[[], EmbeddingModel], model_id: str, *,
        max_batch_tokens: int = 8192, max_batch_size: int = 64, max_queue: int = 16384,
    ):
        super().__init__("mlx-embeddings")
        self._load = load
        self._model_id = model_id
        self._max_batch_tokens = max_batch_tokens
        self._max_batch_size = max_batch_size
        self._max_queue = max_queue
        self._model: EmbeddingModel | None = None
        self._info: EmbeddingModelInfo | None = None
        self._pending: deque[tuple[_Job, int]] = deque()
        self._lock = threading.Lock()
        self._stats = {"requests": 0, "sequences": 0, "tokens": 0, "batches": 0,
                       "padded_tokens": 0, "busy_s": 0.0}

    @property
    def model(self) -> EmbeddingModel:
        if self._model is None:
            raise RuntimeError("the embedding model is not loaded yet")
        return self._model

    def _run(self) -> None:
        try:
            self._model = self._load()
            self._info = _info(self._model_id, self._model)
            self._state = "ok"
        except ModelLoadError as e:
            self._error, self._state = str(e), "error"
            return
        except Exception as e:
            log.exception("embedding model load failed")
            self._error, self._state = f"{type(e).__name__}: {e}", "error"
            return
        while not self._stop.is_set():
            batch = self._next_batch()
            if batch:
                self._run_batch(batch)
            else:
                self._wake.wait(0.05)
                self._wake.clear()

    # -- batching -------------------------------------------------------------
    def _next_batch(self) -> list[tuple[_Job, int]]:
        """A FIFO prefix of the queue whose padded size fits the token budget."""
        batch: list[tuple[_Job, int]] = []
        longest = 0
        with self._lock:
            while self._pending and len(batch) < self._max_batch_size:
                job, i = self._pending[0]
                if job.future.cancelled():
                    self._pending.popleft()
                    continue
                n = max(longest, len(job.request.inputs[i]))
                if batch and n * (len(batch) + 1) > self._max_batch_tokens:
                    break
                batch.append(self._pending.popleft())
                longest = n
        return batch

    def _run_batch(self, batch: list[tuple[_Job, int]]) -> None:
        t0 = time.perf_counter()
        seqs = [job.request.inputs[i] for job, i in batch]
        try:
            vecs = self.model.embed(seqs)
        except Exception as e:  # the whole batch failed: fail its requests, keep serving
            log.exception("embedding batch failed")
            for job in {id(j): j for j, _ in batch}.values():
                if not job.future.done():
                    job.future.set_exception(EngineError(f"embedding failed: {type(e).__name__}"))
            return
        for (job, i), vec in zip(batch, vecs):
            job.out[i] = vec
            job.remaining -= 1
            if job.remaining == 0 and not job.future.done():
                job.future.set_result(_cut(job.out, job.request.dimensions))
        s = self._stats
        s["batches"] += 1
        s["sequences"] += len(seqs)
        s["tokens"] += sum(len(q) for q in seqs)
        s["padded_tokens"] += len(seqs) * max(len(q) for q in seqs)
        s["busy_s"] += time.perf_counter() - t0

    # -- EmbeddingClient ------------------------------------------------------
    @property
    def embedding_info(self) -> EmbeddingModelInfo:
        if self._info is None:
            raise RuntimeError("the embedding model is not loaded yet")
        return self._info

    def tokenize(self, texts: Sequence[str], truncate: bool = False) -> list[list[int]]:
        model = self.model
        tok = model.truncating_tokenizer if truncate else model.tokenizer
        return [list(e.ids) for e in tok.encode_batch(list(texts))]

    async def embed(self, request: EmbeddingRequest) -> np.ndarray:
        self._check(request)
        future: concurrent.futures.Future[np.ndarray] = concurrent.futures.Future()
        job = _Job(request, np.zeros((len(request.inputs), self.model.dim), np.float32),
                   len(request.inputs), future)
        if not request.inputs:
            return job.out
        order = sorted(range(len(request.inputs)), key=lambda i: len(request.inputs[i]))
        with self._lock:
            if len(self._pending) + len(order) > self._max_queue:
                raise QueueFullError()
            self._pending.extend((job, i) for i in order)
            self._stats["requests"] += 1
        self._wake.set()
        return await asyncio.wrap_future(future)  # cancelling it drops the queued sequences

    def _check(self, request: EmbeddingRequest) -> None:
        info = self.embedding_info
        if request.dimensions is not None and not info.allows_dimensions(request.dimensions):
            raise InvalidRequestError(f"This model cannot return {request.dimensions} "
                                      "dimensions.", "dimensions")
        for i, seq in enumerate(request.inputs):
            if not seq:
                raise InvalidRequestError("An input has no tokens.", f"input.{i}")
            if len(seq) > info.max_length:
                raise InvalidRequestError(f"Input {i} has {len(seq)} tokens; the model takes "
                                          f"at most {info.max_length}.", f"input.{i}")
            if min(seq) < 0 or max(seq) >= info.vocab_size:
                raise InvalidRequestError(f"Input {i} has token ids outside the vocabulary "
                                          f"[0, {info.vocab_size}).", f"input.{i}")

    def health(self) -> Health:
        if self._state == "loading":
            return Health(False, "loading", "Loading model")
        if self._state == "error" or not self._thread.is_alive():
            return Health(False, "error", self._error or "the embedding thread has stopped")
        return Health(True, "ok")

    def stats(self) -> dict[str, Any]:
        with self._lock:
            queued = len(self._pending)
        return {"state": self._state, "queued_sequences": queued, **self._stats}


def _cut(vecs: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Matryoshka truncation: keep the first `dimensions`, back to unit length."""
    if dimensions is None or dimensions >= vecs.shape[1]:
        return vecs
    cut = vecs[:, :dimensions]
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)


def _info(model_id: str, model: EmbeddingModel) -> EmbeddingModelInfo:
    return EmbeddingModelInfo(
        id=model_id, path=str(model.path), created=int(time.time()), dim=model.dim,
        max_length=model.max_length, vocab_size=model.vocab_size, pooling=model.pooling,
        matryoshka_dims=model.matryoshka_dims, dtype=model.dtype,
    )
