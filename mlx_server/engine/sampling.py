"""Per-request samplers and logits processors for the batched generator."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import mlx.core as mx
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    make_logits_processors,
)

from .np_sampling import NumpySampler
from .types import InvalidRequestError, SamplingParams

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]

# Penalty windows. llama.cpp looks back 64 tokens by default (repeat_last_n).
PENALTY_CONTEXT = 64


def greedy(logprobs: mx.array) -> mx.array:
    return mx.argmax(logprobs, axis=-1)


def make_sampler(params: SamplingParams) -> Sampler:
    """A sampler with its own PRNG key, so a seeded request is reproducible in any batch."""
    if params.temperature == 0.0:
        # One shared object: the batch generator samples all-greedy batches in one call.
        return greedy
    seed = params.seed if params.seed is not None else secrets.randbits(63)
    if mx.default_device() == mx.cpu:  # MLX's CPU sort/exp are scalar: see np_sampling.py
        return NumpySampler(params, seed)
    state = {"key": mx.random.key(seed)}
    inv_temp = 1.0 / params.temperature
    filters: list[Callable[[mx.array], mx.array]] = []
    if 0.0 < params.top_p < 1.0:
        filters.append(lambda x: apply_top_p(x, params.top_p))
    if params.min_p > 0.0:
        filters.append(lambda x: apply_min_p(x, params.min_p, 1))
    if params.top_k > 0:
        filters.append(lambda x: apply_top_k(x, params.top_k))

    def sample(logprobs: mx.array) -> mx.array:
        for f in filters:
            logprobs = f(logprobs)
        state["key"], sub = mx.random.split(state["key"])
        return mx.random.categorical(logprobs * inv_temp, key=sub)

    return sample


def reads_logprobs(params: SamplingParams, sampler: Sampler) -> bool:
    """Whether a row needs the batched step's normalized log-probabilities: it reports
    them, or its sampler is not one that draws the same token from raw logits (greedy, and
    the numpy sampler, which works relative to the row's maximum; MLX's top-p exponentiates
    the values as they are)."""
    return params.logprobs or not (sampler is greedy or isinstance(sampler, NumpySampler))


def check_logit_bias(params: SamplingParams, vocab_size: int) -> None:
    """Reject logit_bias tokens outside the vocabulary (at submit, before any work)."""
    for token_id in params.logit_bias:
        if not 0 <= token_id < vocab_size:
            raise InvalidRequestError(
                f"logit_bias names token {token_id}, outside the vocabulary (0..{vocab_size - 1}).",
                param="logit_bias",
            )


def make_processors(params: SamplingParams, vocab_size: int) -> list[LogitsProcessor]:
    """Logit bias and repetition/presence/frequency penalties."""
    check_logit_bias(params, vocab_size)
    return make_logits_processors(
        logit_bias=dict(params.logit_bias) or None,
        repetition_penalty=params.repetition_penalty if params.repetition_penalty != 1.0 else None,
        repetition_context_size=PENALTY_CONTEXT,
        presence_penalty=params.presence_penalty or None,
        presence_context_size=PENALTY_CONTEXT,
        frequency_penalty=params.frequency_penalty or None,
        frequency_context_size=PENALTY_CONTEXT,
    )


def top_logprobs(logprobs: mx.array, k: int) -> list[tuple[int, float]]:
    """The k most likely tokens of one step, best first."""
    if k <= 0:
        return []
    k = min(k, logprobs.shape[-1])
    idx = mx.argpartition(-logprobs, kth=k - 1)[:k]
    vals = logprobs[idx]
    order = mx.argsort(-vals)
    idx, vals = idx[order].tolist(), vals[order].tolist()
    return list(zip(idx, vals))
