"""Greedy decoding of a bare model with mlx-lm's own cache: what the load-time model
rewrites (norm_scale.py, proj_fuse.py) are checked against, before and after install."""

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache


def greedy(model, prompt, steps=6):
    """(tokens of `steps` greedy steps after `prompt`, the last step's logits)."""
    cache = make_prompt_cache(model)
    logits = model(mx.array([prompt]), cache=cache)[:, -1]
    out = []
    for _ in range(steps):
        y = mx.argmax(logits, axis=-1)
        out.append(y.item())
        logits = model(y[:, None], cache=cache)[:, -1]
    return out, logits
