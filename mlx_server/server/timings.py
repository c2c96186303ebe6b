"""llama-server's `timings` object, from the engine's final outputs."""

from __future__ import annotations

from collections.abc import Sequence

from mlx_server.engine.types import GenerationOutput
from mlx_server.server.protocol import Timings


def timings(finals: Sequence[GenerationOutput | None]) -> Timings | None:
    """Token counts add up over a request's sequences; times are the longest one's, since
    they ran side by side. None when no sequence finished."""
    done = [f for f in finals if f is not None]
    if not done:
        return None
    cache_n = sum(f.cached_tokens for f in done)
    prompt_n = sum(max(0, f.prompt_tokens - f.cached_tokens) for f in done)
    predicted_n = sum(f.completion_tokens for f in done)
    prompt_ms = max(f.prompt_s for f in done) * 1000
    predicted_ms = max(f.decode_s for f in done) * 1000
    return Timings(
        cache_n=cache_n,
        prompt_n=prompt_n,
        prompt_ms=prompt_ms,
        prompt_per_token_ms=prompt_ms / prompt_n if prompt_n else 0.0,
        prompt_per_second=1000 * prompt_n / prompt_ms if prompt_ms else 0.0,
        predicted_n=predicted_n,
        predicted_ms=predicted_ms,
        predicted_per_token_ms=predicted_ms / predicted_n if predicted_n else 0.0,
        predicted_per_second=1000 * predicted_n / predicted_ms if predicted_ms else 0.0,
    )
