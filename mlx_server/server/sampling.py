"""OpenAI request parameters → the engine's `SamplingParams`."""

from __future__ import annotations

from typing import Protocol, TypeVar

from mlx_server.engine.types import PromptTooLongError, SamplingParams
from mlx_server.server.errors import invalid

_SEED_MASK = (1 << 64) - 1
T = TypeVar("T", int, float)


class SamplingFields(Protocol):
    """The sampling fields chat and completions requests share."""

    frequency_penalty: float | None
    logit_bias: dict[str, float] | None
    presence_penalty: float | None
    seed: int | None
    stop: str | list[str] | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    min_p: float | None
    repetition_penalty: float | None
    ignore_eos: bool | None


def resolve_max_tokens(requested: int | None, prompt_tokens: int, ctx_size: int) -> int:
    """The request's limit, clamped to the room left in the context (as llama-server does);
    all of that room when the request names no limit."""
    room = ctx_size - prompt_tokens
    if room < 1:
        raise PromptTooLongError(prompt_tokens, ctx_size)
    return room if requested is None else min(requested, room)


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    return tuple(s for s in items if s)  # an empty stop string would end every output at once


def logit_bias(bias: dict[str, float] | None, vocab_size: int) -> dict[int, float]:
    out = {int(k): v for k, v in (bias or {}).items()}
    too_big = [k for k in out if k >= vocab_size]
    if too_big:
        raise invalid(f"Invalid value for 'logit_bias': token id {too_big[0]} is outside the "
                      f"vocabulary of {vocab_size} tokens.", "logit_bias")
    return out


def sampling_params(
    req: SamplingFields, *, max_tokens: int, vocab_size: int, top_logprobs: int | None
) -> SamplingParams:
    """`top_logprobs` None means no logprobs; 0 means the chosen token's logprob only."""
    defaults = SamplingParams()
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=_or(req.temperature, defaults.temperature),
        top_p=_or(req.top_p, defaults.top_p),
        top_k=_top_k(_or(req.top_k, defaults.top_k), vocab_size),
        min_p=_or(req.min_p, defaults.min_p),
        seed=req.seed,
        presence_penalty=_or(req.presence_penalty, defaults.presence_penalty),
        frequency_penalty=_or(req.frequency_penalty, defaults.frequency_penalty),
        repetition_penalty=_or(req.repetition_penalty, defaults.repetition_penalty),
        logit_bias=logit_bias(req.logit_bias, vocab_size),
        stop=stop_strings(req.stop),
        ignore_eos=bool(req.ignore_eos),
        logprobs=top_logprobs is not None,
        top_logprobs=top_logprobs or 0,
    )


def _top_k(top_k: int, vocab_size: int) -> int:
    # llama-server treats top_k <= 0 as "off"; so does the engine with 0. A k of the whole
    # vocabulary or more keeps every token, which is "off" too (and a k past int32 would
    # fail inside the sampler).
    return 0 if top_k <= 0 or top_k >= vocab_size else top_k


def per_choice(params: SamplingParams, n: int) -> list[SamplingParams]:
    """n copies; with a seed, each choice gets its own (seed, seed+1, ...) so they differ
    yet stay reproducible."""
    if params.seed is None:
        return [params] * n
    return [params.replace(seed=(params.seed + i) & _SEED_MASK) for i in range(n)]


def _or(value: T | None, default: T) -> T:
    return default if value is None else value
