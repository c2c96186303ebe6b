"""POST /v1/embeddings: strings or token ids in, one unit vector per input out.

Inputs over the model's length get a 400 unless the request sets `truncate`; token-id
inputs are used as given (no special tokens added), text is tokenized as the model's
sentence-transformers config would.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from mlx_server.engine import types as engine_types
from mlx_server.engine.types import EmbeddingClient, EmbeddingModelInfo, EngineError
from mlx_server.server.errors import APIError, from_engine_error, invalid
from mlx_server.server.generation import cancel_on_disconnect
from mlx_server.server.protocol import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from mlx_server.server.routes.common import json_response, parse_body, tokenize_off_loop
from mlx_server.server.state import ready_embeddings, request_id

router = APIRouter()

MAX_INPUTS = 2048  # OpenAI's limit per request


@router.post("/v1/embeddings")
async def create_embeddings(request: Request) -> Response:
    req = await parse_body(request, EmbeddingRequest)
    client = ready_embeddings(request)
    info = client.embedding_info
    if req.dimensions is not None and not info.allows_dimensions(req.dimensions):
        raise invalid(_dimensions_message(info, req.dimensions), "dimensions")
    seqs = await _token_inputs(client, req.input, bool(req.truncate), info)
    work = client.embed(engine_types.EmbeddingRequest(
        request_id(request), tuple(tuple(s) for s in seqs), req.dimensions))
    try:
        vectors = await cancel_on_disconnect(request, work)
    except EngineError as exc:
        raise from_engine_error(exc, "input") from exc
    b64 = req.encoding_format == "base64"
    data = [Embedding(embedding=_b64(v) if b64 else np.asarray(v).tolist(), index=i)
            for i, v in enumerate(vectors)]
    tokens = sum(len(s) for s in seqs)
    return json_response(EmbeddingResponse(
        data=data, model=info.id, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)))


async def _token_inputs(
    client: EmbeddingClient, inputs: str | list[str] | list[int] | list[list[int]],
    truncate: bool, info: EmbeddingModelInfo,
) -> list[list[int]]:
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs:
        raise invalid("Invalid value for 'input': it must not be empty.", "input")
    if len(inputs) > MAX_INPUTS:
        raise invalid(f"Invalid value for 'input': at most {MAX_INPUTS} inputs per request, "
                      f"got {len(inputs)}.", "input")
    if isinstance(inputs[0], int):
        seqs = [list(inputs)]
    elif isinstance(inputs[0], list):
        seqs = [list(s) for s in inputs]  # type: ignore[arg-type]
    else:
        texts: list[str] = inputs  # type: ignore[assignment]
        for i, text in enumerate(texts):
            if not text:
                raise invalid(f"Invalid value for 'input.{i}': it must not be empty.", f"input.{i}")
        try:
            seqs = await tokenize_off_loop(client.tokenize, texts, truncate)
        except EngineError as exc:
            raise from_engine_error(exc, "input") from exc
    return [_fit(i, s, truncate, info.max_length) for i, s in enumerate(seqs)]


def _fit(i: int, seq: list[int], truncate: bool, max_length: int) -> list[int]:
    param = f"input.{i}"
    if not seq:
        raise invalid(f"Invalid value for '{param}': it must not be empty.", param)
    if len(seq) <= max_length:
        return seq
    if truncate:
        return seq[:max_length]
    raise APIError(400, f"Input {i} has {len(seq)} tokens, more than this model's maximum "
                   f"of {max_length}; shorten it, or set \"truncate\": true to cut it.",
                   param=param, code="context_length_exceeded")


def _dimensions_message(info: EmbeddingModelInfo, asked: int) -> str:
    if info.matryoshka_dims is None:
        return (f"This model does not support 'dimensions' other than its own {info.dim} "
                f"(it is not a Matryoshka model); got {asked}.")
    allowed = (", ".join(map(str, info.matryoshka_dims)) if info.matryoshka_dims
               else f"1 to {info.dim}")
    return f"Invalid value for 'dimensions': this model allows {allowed}; got {asked}."


def _b64(vector: Sequence[float]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
