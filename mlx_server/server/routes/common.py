"""Helpers every generation route uses: body parsing, ids, response metadata."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from mlx_server.engine.types import EngineClient, GenerationRequest, PromptImage, SamplingParams
from mlx_server.server.errors import from_validation_errors, invalid
from mlx_server.server.state import server_state, system_fingerprint

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")

# Hugging Face tokenizers can fail ("Already borrowed") when one instance is used from
# several threads at once, so templating/tokenizing runs in one worker at a time.
_TOKENIZER_LOCK = threading.Lock()


async def tokenize_off_loop(fn: Callable[..., R], *args: Any) -> R:
    """Run a templating/tokenizing call off the event loop (it can take milliseconds)."""

    def locked() -> R:
        with _TOKENIZER_LOCK:
            return fn(*args)

    return await run_in_threadpool(locked)


async def parse_body(request: Request, model: type[M]) -> M:
    """Parse the body strictly, whatever the Content-Type: curl's default form type
    still carries JSON, and llama-server accepts it."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise from_validation_errors(list(exc.errors())) from None


@dataclass(frozen=True)
class ResponseMeta:
    """The fields every response and chunk of one request repeats."""

    id: str
    created: int
    model: str
    system_fingerprint: str


def response_meta(engine: EngineClient, prefix: str) -> ResponseMeta:
    info = engine.model_info
    return ResponseMeta(f"{prefix}-{uuid.uuid4().hex}", int(time.time()), info.id,
                        system_fingerprint(info))


def generation_requests(
    request: Request, meta: ResponseMeta, prompts: Sequence[Sequence[int]],
    params: Sequence[SamplingParams], images: tuple[PromptImage, ...] = (),
) -> list[GenerationRequest]:
    """One engine request per choice; ids derive from the response id, so they are unique
    even when clients reuse an X-Request-Id. `images` sit in every prompt (chat's n > 1)."""
    engine = server_state(request).config.engine
    most = engine.max_slots + engine.max_queue
    if len(prompts) > most:
        # More sequences than slots plus queue can never be admitted: a 503 would have
        # clients retry forever.
        raise invalid(f"Invalid value for 'n': the request needs {len(prompts)} sequences but "
                      f"this server runs at most {most} at once ({engine.max_slots} slots "
                      f"and a queue of {engine.max_queue}).", "n", "capacity_exceeded")
    timeout = engine.request_timeout_s
    return [GenerationRequest(f"{meta.id}-{i}", prompt, p, timeout, images)
            for i, (prompt, p) in enumerate(zip(prompts, params, strict=True))]


def json_response(body: BaseModel) -> Response:
    return Response(body.model_dump_json(), media_type="application/json")
