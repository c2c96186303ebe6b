"""Single-stream decode paths measured back to back, rep after rep, on one warm machine.

Lent GPU hosts drift by up to 1.6x between minutes (bench/cuda/RESULTS.md, session 3), so
comparing paths run minutes apart misleads. Each rep here runs, on the same fresh random
128-token prompt, greedy, EOS ignored:

1. `plain`: a generate_step-shaped pipelined loop over the model's own caches;
2. `batch-caches`: the same loop over those caches merged into mlx-lm's batched classes;
3. `generator`: mlx-lm's BatchGenerator (what mlx_lm.server and our engine drive);
4. `engine`: our EngineCore with the server's defaults;
5. `stream_generate`: mlx-lm's own single-sequence generator (the "raw" ceiling);
6. `plain/-norm-scale`, `engine/-norm-scale`: 1 and 4 with Gemma's RMSNorm computing its
   (1 + weight) scale every call, as mlx-lm does (engine/norm_scale.py undone).

and prints per-rep tok/s and the per-rep ratios to `plain`, whose spread is what to quote.

    python -m bench.cuda.interleave --model DIR [--tokens 128] [--reps 5] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any


def _stream_generate(model: Any, tokenizer: Any, prompt: list[int], tokens: int) -> float:
    from mlx_lm.generate import stream_generate

    from bench.cuda.serve_gap import _rate

    stamps = [time.perf_counter() for _ in stream_generate(model, tokenizer, prompt, max_tokens=tokens)]
    return _rate(stamps)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import mlx.core as mx

    from bench.cuda.cache_cost import PROMPT, _loop, _prefilled
    from bench.cuda.serve_gap import bare, core
    from mlx_server.config import EngineConfig
    from mlx_server.engine import norm_scale
    from mlx_server.engine.loader import load_model

    loaded = load_model(args.model)
    model, config = loaded.model, EngineConfig()
    runs: list[dict[str, float]] = []
    for i in range(args.reps):
        prompt = mx.random.randint(0, loaded.vocab_size, (PROMPT,))
        r: dict[str, float] = {}
        cache, y = _prefilled(model, prompt)
        r["plain"] = _loop(model, cache, y, args.tokens)
        cache, y = _prefilled(model, prompt)
        merged = [type(c).merge([c]) if hasattr(type(c), "merge") else c for c in cache]
        r["batch-caches"] = _loop(model, merged, y, args.tokens)
        r["generator"] = bare(model, prompt.tolist(), args.tokens)
        r["engine"] = core(loaded, config, prompt.tolist(), args.tokens, i)
        r["stream_generate"] = _stream_generate(model, loaded.tokenizer, prompt.tolist(), args.tokens)
        if norm_scale.uninstall(model):
            try:
                cache, y = _prefilled(model, prompt)
                r["plain/-norm-scale"] = _loop(model, cache, y, args.tokens)
                r["engine/-norm-scale"] = core(loaded, config, prompt.tolist(), args.tokens, 1000 + i)
            finally:
                norm_scale.install(model)
        runs.append(r)
        print({k: round(v, 1) for k, v in r.items()},
              {k: round(v / r["plain"], 2) for k, v in r.items() if k != "plain"}, flush=True)
    ratios = {k: [r[k] / r["plain"] for r in runs] for k in runs[0] if k != "plain"}
    summary = {k: (round(min(v), 2), round(statistics.median(v), 2), round(max(v), 2))
               for k, v in ratios.items()}
    print("ratio to plain (min, median, max):", summary)
    if args.out:
        args.out.write_text(json.dumps({"device": str(mx.default_device()), "runs": runs,
                                        "ratio_to_plain": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
