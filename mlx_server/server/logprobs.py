"""The engine's `TokenLogprob`s in OpenAI's two formats: chat's per-token objects and the
legacy completions' parallel arrays."""

from __future__ import annotations

import math
from collections.abc import Sequence

from mlx_server.engine.types import TokenLogprob
from mlx_server.server.protocol import (
    ChatLogprobs,
    CompletionLogprobs,
    TokenLogprobEntry,
    TopLogprob,
)

# JSON has no -inf; OpenAI reports impossible tokens as -9999.0.
_FLOOR = -9999.0


def _finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else _FLOOR


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8", errors="replace"))


def chat_logprobs(items: Sequence[TokenLogprob], top_n: int) -> ChatLogprobs:
    return ChatLogprobs(content=[
        TokenLogprobEntry(
            token=item.token,
            logprob=_finite(item.logprob),
            bytes=_bytes(item.token),
            top_logprobs=[TopLogprob(token=tok, logprob=_finite(lp), bytes=_bytes(tok))
                          for _, tok, lp in item.top[:top_n]],
        )
        for item in items
    ])


def completion_logprobs(
    items: Sequence[TokenLogprob], top_n: int, text_offset: int
) -> CompletionLogprobs:
    """`text_offset` is where the first of `items` starts in the choice's text."""
    offsets = []
    for item in items:
        offsets.append(text_offset)
        text_offset += len(item.token)
    return CompletionLogprobs(
        text_offset=offsets,
        token_logprobs=[_finite(item.logprob) for item in items],
        tokens=[item.token for item in items],
        # Alternatives that decode to the same string collapse, as in OpenAI's dicts.
        top_logprobs=[{tok: _finite(lp) for _, tok, lp in item.top[:top_n]} for item in items],
    )
