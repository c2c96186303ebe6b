"""What mlx-lm's batched caches cost a lone sequence: the same pipelined greedy loop
(generate_step's shape: build step n+1 while step n runs) over

1. `plain`: the model's own per-sequence caches (KVCache / RotatingKVCache);
2. `batch`: the same caches merged into BatchKVCache / BatchRotatingKVCache (B=1), what
   BatchGenerator decodes with;
3. `batch-nomask`: (2) with the per-step attention masks skipped (valid for one row
   without padding: every cached position is attended);
4. `batch-generator`: mlx-lm's BatchGenerator itself.

    python -m bench.cuda.cache_cost --model DIR [--tokens 128] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

PROMPT = 128


def _loop(model: Any, cache: list[Any], y: Any, tokens: int) -> float:
    import mlx.core as mx

    def step(y: Any) -> Any:
        logits = model(y[:, None], cache=cache)[:, -1, :]
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return mx.argmax(logprobs, axis=-1), logprobs

    y, lp = step(y)
    mx.async_eval(y, lp)
    stamps = []
    for _ in range(tokens):
        ny, nlp = step(y)
        mx.async_eval(ny, nlp)
        y.tolist()
        stamps.append(time.perf_counter())
        y, lp = ny, nlp
    return (len(stamps) - 2) / (stamps[-1] - stamps[1])


def _prefilled(model: Any, prompt: Any) -> tuple[list[Any], Any]:
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    y = mx.argmax(model(prompt[None], cache=cache)[:, -1, :], axis=-1)
    mx.eval(y, [c.state for c in cache])
    return cache, y


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)

    import mlx.core as mx
    from mlx_lm.models import cache as cache_mod

    from bench.cuda.serve_gap import bare
    from mlx_server.engine.loader import load_model

    loaded = load_model(args.model)
    model = loaded.model
    res: dict[str, list[float]] = {"plain": [], "batch": [], "batch-nomask": [],
                                   "batch-generator": []}
    masks = {c: c.make_mask for c in (cache_mod.BatchKVCache, cache_mod.BatchRotatingKVCache)}
    for _ in range(args.reps):
        prompt = mx.random.randint(0, loaded.vocab_size, (PROMPT,))
        cache, y = _prefilled(model, prompt)
        res["plain"].append(_loop(model, cache, y, args.tokens))
        for name in ("batch", "batch-nomask"):
            cache, y = _prefilled(model, prompt)
            batched = [type(c).merge([c]) if hasattr(type(c), "merge") else c for c in cache]
            if name == "batch-nomask":
                for c in masks:
                    c.make_mask = lambda self, *a, **k: None
            try:
                res[name].append(_loop(model, batched, y, args.tokens))
            finally:
                for c, f in masks.items():
                    c.make_mask = f
        res["batch-generator"].append(bare(model, prompt.tolist(), args.tokens))
        print({k: round(v[-1], 1) for k, v in res.items()}, flush=True)
    print("decode tok/s (median):", {k: round(statistics.median(v), 1) for k, v in res.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
