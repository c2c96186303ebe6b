"""KV-cache types (-ctk/-ctv) on the default model: bytes per token, drift, decode speed.

    python -m bench.kv_quant                      # f32, f16, q8_0, q4_0; 256 tokens
    python -m bench.kv_quant --tokens 32 --forced 256 --prompts 2   # a busy 2-core box

For each type the engine (prefix cache off) decodes the prompts together, greedily, with
EOS ignored, and drift from the f32 cache is measured two ways:
- free-running: how many leading tokens equal f32's (`same_prefix`), and the share of
  positions that match at all (after a divergence the contexts differ);
- teacher-forced: each prompt plus a fixed `--forced`-token passage goes through a fresh
  cache of the type, and each position's argmax is compared with f32's on the same input
  (no error compounding, and no decoding needed, so it is cheap to make long).
Decode tok/s is the batch's tokens over its decode time (all prompts run together).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from mlx_server.platform import ensure_fast_blas

PROMPTS = [
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator works, step by step, in as much detail as you can.",
    "Describe each planet of the solar system, from Mercury to Neptune.",
]


async def _decode(loaded: Any, cache_type: str, prompts: list[list[int]], n: int) -> dict:
    from mlx_server.config import EngineConfig
    from mlx_server.engine.async_engine import AsyncEngine
    from mlx_server.engine.types import GenerationRequest, SamplingParams

    ct = None if cache_type == "f32" else cache_type  # f32: the model's own caches
    cfg = EngineConfig(max_slots=len(prompts), enable_prefix_cache=False,
                       kv_cache_type_k=ct, kv_cache_type_v=ct)
    eng = AsyncEngine(lambda: loaded, cfg, "bench").start()
    assert eng.wait_ready(300), eng.health()

    async def one(i: int, ids: list[int]) -> tuple[list[int], float]:
        sp = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
        outs = [o async for o in eng.generate(GenerationRequest(f"{cache_type}-{i}", ids, sp))]
        return [t for o in outs for t in o.token_ids], outs[-1].decode_s

    try:
        got = await asyncio.gather(*[one(i, p) for i, p in enumerate(prompts)])
        stats = eng.stats()
    finally:
        eng.shutdown()
    tokens = [g[0] for g in got]
    return {"tokens": tokens, "bytes_per_token": stats["kv_bytes_per_token"],
            "decode_tok_s": sum(len(t) - 1 for t in tokens) / max(g[1] for g in got)}


def _forced_argmax(loaded: Any, cache_type: str, ids: list[int], start: int) -> list[int]:
    """Each position's greedy next token from `start` on, with `ids` fed through a fresh
    cache of this type (64 positions of 262k logits at a time)."""
    import mlx.core as mx

    from mlx_server.engine.kv_quant import KVCacheFormat

    ct = None if cache_type == "f32" else cache_type
    cache = KVCacheFormat.parse(ct, ct).make_cache(loaded.model)
    preds: list[int] = []
    for s in range(0, len(ids), 64):
        logits = loaded.model(mx.array([ids[s:s + 64]]), cache=cache)
        preds += mx.argmax(logits[0], axis=-1).tolist()
    return preds[start:]


def _forced_inputs(tok: Any, prompts: list[list[int]], n: int) -> list[tuple[list[int], int]]:
    """Each prompt followed by `n` tokens of a fixed natural passage (no decoding needed)."""
    from bench.prompts import STORY_FILL, STORY_HEAD

    passage = list(tok.encode(STORY_HEAD + "".join(STORY_FILL) * 8, add_special_tokens=False))
    return [(p + passage[:n], len(p) - 1) for p in prompts]


def _with_fast_blas() -> None:
    """Re-exec once with OpenBLAS preloaded, as the server's CLI does (~16x faster f32 matmuls)."""
    import os

    from mlx_server.platform import blas_env

    env = blas_env()
    if env.get("LD_PRELOAD") != os.environ.get("LD_PRELOAD") and "_KVQ_REEXEC" not in env:
        env["_KVQ_REEXEC"] = "1"
        os.execve(sys.executable, [sys.executable, "-m", "bench.kv_quant", *sys.argv[1:]], env)


def main() -> None:
    # Measured as the server runs: with OpenBLAS preloaded (mlx_server/platform.py).
    ensure_fast_blas(sys.argv[1:], module="bench.kv_quant")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--types", nargs="+", default=["f32", "f16", "q8_0", "q4_0"])
    ap.add_argument("--forced", type=int, default=256,
                    help="teacher-forced positions per prompt (a fixed passage)")
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many (1-3)")
    args = ap.parse_args()
    _with_fast_blas()
    from mlx_server.engine.loader import load_model
    from mlx_server.loading.default_model import default_model_path

    t0 = time.perf_counter()
    loaded = load_model(default_model_path())
    tok = loaded.tokenizer
    prompts = [list(tok.encode(tok.apply_chat_template(
        [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False),
        add_special_tokens=False)) for p in PROMPTS[:args.prompts]]
    types = ["f32", *[t for t in args.types if t != "f32"]]
    asyncio.run(_decode(loaded, "f32", prompts, 4))  # warm-up: first kernels, allocator
    runs = {}
    for t in types:
        runs[t] = asyncio.run(_decode(loaded, t, prompts, args.tokens))
        print(f"{t}: {runs[t]['decode_tok_s']:.2f} tok/s, {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    ref = runs["f32"]["tokens"]
    forced_inputs = _forced_inputs(tok, prompts, args.forced)
    forced: dict[str, list[list[int]]] = {}
    rows = []
    for t in types:
        r = runs[t]
        same = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), len(y))
                for x, y in zip(r["tokens"], ref)]
        match = sum(sum(a == b for a, b in zip(x, y)) for x, y in zip(r["tokens"], ref))
        preds = [_forced_argmax(loaded, t, ids, start) for ids, start in forced_inputs]
        forced[t] = preds
        agree = sum(sum(a == b for a, b in zip(x, y)) for x, y in zip(preds, forced["f32"]))
        rows.append({"type": t, "bytes_per_token": r["bytes_per_token"],
                     "bytes_vs_f32": r["bytes_per_token"] / runs["f32"]["bytes_per_token"],
                     "same_prefix": same,
                     "positional_match": match / sum(len(y) for y in ref),
                     "teacher_forced_match": agree / sum(len(x) for x in forced["f32"]),
                     "decode_tok_s": round(r["decode_tok_s"], 2)})
    from mlx_server.platform import loaded_blas

    print(json.dumps({"model": str(loaded.path), "dtype": loaded.dtype, "blas": loaded_blas(),
                      "tokens": args.tokens, "forced": args.forced,
                      "prompts": len(prompts), "wall_s": round(time.perf_counter() - t0, 1),
                      "rows": rows}, indent=2))
    n = len(prompts)
    print(f"\n| type | bytes/token | vs f32 | same prefix (of {args.tokens}) | positional | "
          f"teacher-forced ({n} x {args.forced}) | decode tok/s (batch {n}) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['type']} | {r['bytes_per_token']} | {r['bytes_vs_f32']:.3f} | "
              f"{', '.join(map(str, r['same_prefix']))} | {r['positional_match']:.1%} | "
              f"{r['teacher_forced_match']:.1%} | {r['decode_tok_s']} |")


if __name__ == "__main__":
    main()
