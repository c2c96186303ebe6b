"""Single-stream decode paths measured back to back, rep after rep, on one warm machine.

Lent GPU hosts drift by up to 1.6x between minutes (bench/cuda/RESULTS.md, session 3), so
comparing paths run minutes apart misleads. Each rep here runs, on the same fresh random
128-token prompt, greedy, EOS ignored:

1. `plain`: a generate_step-shaped pipelined loop over the model's own caches;
2. `batch-caches`: the same loop over those caches merged into mlx-lm's batched classes;
3. `generator`: mlx-lm's BatchGenerator (what mlx_lm.server and our engine drive);
4. `engine`: our EngineCore with the server's defaults;
5. `stream_generate`: mlx-lm's own single-sequence generator (the "raw" ceiling);
6. `plain/-M`, `engine/-M` for each kernel-cutting module M the loader installed
   (`norm-scale`, `gelu-gate`, `proj-fuse`, and `all` of them): 1 and 4 with M undone,
   as mlx-lm runs the model (`stream_generate/-all`: raw mlx-lm, stock). On odd reps these come before 1-5, so drift within a rep
   does not always favour one side.

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
    from mlx_server.engine import gelu_gate, norm_scale, proj_fuse
    from mlx_server.engine.loader import load_model

    loaded = load_model(args.model)
    model, config = loaded.model, EngineConfig()
    modules = {"norm-scale": norm_scale, "gelu-gate": gelu_gate, "proj-fuse": proj_fuse}
    undo = {k: [m] for k, m in modules.items()} | {"all": list(modules.values())}
    runs: list[dict[str, float]] = []
    for i in range(args.reps):
        prompt = mx.random.randint(0, loaded.vocab_size, (PROMPT,))
        r: dict[str, float] = {}

        def without(mods: list[Any], tag: str, seed: int, r: dict[str, float] = r,
                    prompt: Any = prompt) -> None:
            undone = [m for m in mods if m.uninstall(model)]
            if not undone:
                return
            try:
                cache, y = _prefilled(model, prompt)
                r[f"plain/-{tag}"] = _loop(model, cache, y, args.tokens)
                r[f"engine/-{tag}"] = core(loaded, config, prompt.tolist(), args.tokens, seed)
                if tag == "all":  # mlx-lm's stock model: the raw ceiling the target is about
                    r["stream_generate/-all"] = _stream_generate(model, loaded.tokenizer,
                                                                 prompt.tolist(), args.tokens)
            finally:
                for m in undone:
                    m.install(model)

        if i % 2:
            for j, (tag, mods) in enumerate(undo.items()):
                without(mods, tag, 1000 * (j + 1) + i)
        cache, y = _prefilled(model, prompt)
        r["plain"] = _loop(model, cache, y, args.tokens)
        cache, y = _prefilled(model, prompt)
        merged = [type(c).merge([c]) if hasattr(type(c), "merge") else c for c in cache]
        r["batch-caches"] = _loop(model, merged, y, args.tokens)
        r["generator"] = bare(model, prompt.tolist(), args.tokens)
        r["engine"] = core(loaded, config, prompt.tolist(), args.tokens, i)
        r["stream_generate"] = _stream_generate(model, loaded.tokenizer, prompt.tolist(), args.tokens)
        if not i % 2:
            for j, (tag, mods) in enumerate(undo.items()):
                without(mods, tag, 1000 * (j + 1) + i)
        runs.append(r)
        print({k: round(v, 1) for k, v in r.items()},
              {k: round(v / r["plain"], 2) for k, v in r.items() if k != "plain"}, flush=True)
    ratios = {k: [r[k] / r["plain"] for r in runs] for k in runs[0] if k != "plain"}
    for k in [k for k in runs[0] if k.startswith("engine/-")]:  # the engine with vs without
        ratios[f"engine vs {k}"] = [r["engine"] / r[k] for r in runs]
    if "stream_generate/-all" in runs[0]:
        ratios["engine vs stream_generate/-all"] = [r["engine"] / r["stream_generate/-all"] for r in runs]
    for k in [k for k in runs[0] if k.startswith("plain/-")]:
        ratios[f"plain vs {k}"] = [r["plain"] / r[k] for r in runs]
    summary = {k: (round(min(v), 2), round(statistics.median(v), 2), round(max(v), 2))
               for k, v in ratios.items()}
    print("ratio to plain (min, median, max):", summary)
    if args.out:
        args.out.write_text(json.dumps({"device": str(mx.default_device()), "runs": runs,
                                        "ratio_to_plain": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
