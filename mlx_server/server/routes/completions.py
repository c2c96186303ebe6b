"""POST /v1/completions: the legacy text endpoint, streamed and not.

Choices are ordered prompt-major: with prompts P and n choices each, choice
`p * n + j` is the j-th completion of prompt p, as OpenAI orders them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from functools import partial
from typing import cast

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlx_server.engine.types import (
    EngineClient,
    EngineError,
    GenerationOutput,
    GenerationRequest,
    TokenLogprob,
)
from mlx_server.server import sse
from mlx_server.server.errors import from_engine_error, invalid, not_supported
from mlx_server.server.generation import (
    EngineStream,
    cancel_on_disconnect,
    check_finish,
    close_all,
    collect,
    finish_reason,
    merged,
    open_streams,
    usage,
)
from mlx_server.server.logprobs import completion_logprobs
from mlx_server.server.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Timings,
    Usage,
)
from mlx_server.server.routes.common import (
    ResponseMeta,
    generation_requests,
    json_response,
    parse_body,
    response_meta,
    tokenize_off_loop,
)
from mlx_server.server.routes.streaming import stream_error_events
from mlx_server.server.sampling import per_choice, resolve_max_tokens, sampling_params
from mlx_server.server.state import ready_engine
from mlx_server.server.timings import timings

router = APIRouter()


@router.post("/v1/completions")
@router.post("/completions")  # llama-server's alias
async def create_completion(request: Request) -> Response:
    req = await parse_body(request, CompletionRequest)
    engine = ready_engine(request)
    n = req.n or 1
    _reject_unsupported(req, n)
    try:
        prompts = await tokenize_off_loop(_tokenize, engine, req.prompt)
        info = engine.model_info
        limits = [resolve_max_tokens(req.max_tokens, len(p), info.ctx_size) for p in prompts]
    except EngineError as exc:
        raise from_engine_error(exc, "prompt") from exc
    params = []
    for limit in limits:
        base = sampling_params(req, max_tokens=limit, vocab_size=info.vocab_size,
                               top_logprobs=req.logprobs)
        params += per_choice(base, n)
    meta = response_meta(engine, "cmpl")
    gen_requests = generation_requests(request, meta, [p for p in prompts for _ in range(n)],
                                       params)
    # Echo needs the prompt as text; only then is decoding it worth the time.
    echoes = [engine.decode(p) if req.echo else "" for p in prompts for _ in range(n)]
    view = _View(meta, req.logprobs, n, echoes)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        streams = await cancel_on_disconnect(request, _open(engine, gen_requests))
        return sse.EventStreamResponse(_events(streams, view, include_usage),
                                       on_close=partial(close_all, streams))
    return await cancel_on_disconnect(request, _complete(engine, gen_requests, view))


def _reject_unsupported(req: CompletionRequest, n: int) -> None:
    if req.suffix:
        raise not_supported("suffix", "suffix (fill-in-the-middle)")
    if req.echo and req.logprobs is not None:
        raise not_supported("echo", "echo together with logprobs (prompt logprobs)")
    if req.best_of is not None and req.best_of != n:
        raise not_supported("best_of", "best_of other than n")


def _tokenize(engine: EngineClient, prompt: str | list[str] | list[int] | list[list[int]]
              ) -> list[list[int]]:
    if isinstance(prompt, str):
        prompts = [engine.encode(prompt)]
    elif prompt and all(isinstance(x, int) for x in prompt):
        prompts = [cast("list[int]", list(prompt))]
    else:
        prompts = [engine.encode(p) if isinstance(p, str) else list(cast("list[int]", p))
                   for p in prompt]
    if not prompts:
        raise invalid("Invalid value for 'prompt': it must not be empty.", "prompt")
    vocab = engine.model_info.vocab_size
    for i, ids in enumerate(prompts):
        if not ids:
            raise invalid("Invalid value for 'prompt': it must not be empty.", "prompt")
        if any(t < 0 or t >= vocab for t in ids):
            raise invalid(f"Invalid value for 'prompt': prompt {i} has token ids outside the "
                          f"vocabulary of {vocab} tokens.", "prompt")
    return prompts


class _View:
    """How this request's outputs are rendered: logprobs, echo, grouping of choices."""

    def __init__(self, meta: ResponseMeta, logprobs: int | None, n: int, echoes: list[str]):
        self.meta, self.logprobs, self.n, self.echoes = meta, logprobs, n, echoes

    def logprobs_for(self, items: Sequence[TokenLogprob], offset: int) -> CompletionLogprobs | None:
        if self.logprobs is None:
            return None
        return completion_logprobs(items, self.logprobs, offset)

    def response(self, choices: list[CompletionChoice], usage: Usage | None = None,
                 timings: Timings | None = None) -> CompletionResponse:
        m = self.meta
        return CompletionResponse(id=m.id, choices=choices, created=m.created, model=m.model,
                                  system_fingerprint=m.system_fingerprint, usage=usage,
                                  timings=timings)


async def _open(engine: EngineClient, gen_requests: list[GenerationRequest]) -> list[EngineStream]:
    try:
        return await open_streams(engine, gen_requests)
    except EngineError as exc:
        raise from_engine_error(exc, "prompt") from exc


async def _complete(
    engine: EngineClient, gen_requests: list[GenerationRequest], view: _View
) -> Response:
    streams = await _open(engine, gen_requests)
    try:
        results = await collect(streams)
    finally:
        await close_all(streams)
    choices = [
        CompletionChoice(
            finish_reason=finish_reason(r.final),
            index=i,
            logprobs=view.logprobs_for(r.logprobs, 0),
            text=view.echoes[i] + r.text,
        )
        for i, r in enumerate(results)
        if r.final is not None
    ]
    finals = [r.final for r in results if r.final is not None]
    return json_response(view.response(choices, usage=usage(finals, view.n),
                                       timings=timings(finals)))


async def _events(
    streams: list[EngineStream], view: _View, include_usage: bool
) -> AsyncIterator[bytes]:
    finals: list[GenerationOutput | None] = [None] * len(streams)
    offsets = [0] * len(streams)  # where each choice's next text starts, for text_offset
    async with stream_error_events(streams, "prompt") as errors:
        for i, echo in enumerate(view.echoes):
            if echo:
                offsets[i] = len(echo)
                yield sse.event(view.response([CompletionChoice(
                    finish_reason=None, index=i, text=echo)]))
        async with aclosing(merged(streams)) as outputs:
            async for i, out in outputs:
                if out.finish_reason is not None:
                    check_finish(out)
                    finals[i] = out
                yield sse.event(view.response([CompletionChoice(
                    finish_reason=finish_reason(out) if out.finish_reason else None, index=i,
                    logprobs=view.logprobs_for(out.logprobs, offsets[i]), text=out.text)],
                    timings=timings(finals) if out.finish_reason and all(finals) else None))
                offsets[i] += len(out.text)
        if include_usage:
            yield sse.event(view.response([], usage=usage([f for f in finals if f], view.n)))
    if errors.event is not None:
        yield errors.event
    yield sse.DONE
