"""Where single-stream decode speed goes between mlx-lm's BatchGenerator and HTTP.

One process, one sequence, greedy, EOS ignored; decode tok/s (first token excluded) of:

1. `bare`: mlx-lm's BatchGenerator stepped in a loop (what both servers drive);
2. `core`: our EngineCore with the server's default configuration (prefix cache on);
3. `async`: our AsyncEngine (engine thread + an asyncio consumer in this process, the
   server's shape without HTTP);
4. `async+load`: the same while the event loop also runs a busy coroutine that stands for
   an HTTP server's per-token work (JSON + a socket write), to see the GIL's share.

Over HTTP, `python -m bench.run --scenarios single` gives the served numbers.

    python -m bench.cuda.serve_gap --model DIR [--tokens 128] [--reps 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

PROMPT = 128


def _rate(stamps: list[float]) -> float:
    return (len(stamps) - 2) / (stamps[-1] - stamps[1]) if len(stamps) > 2 else 0.0


def bare(model: Any, prompt: list[int], tokens: int) -> float:
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator

    gen = BatchGenerator(model, completion_batch_size=1, prefill_batch_size=1,
                         stream=mx.new_stream(mx.default_device()))
    gen.insert([prompt], max_tokens=[tokens])
    stamps: list[float] = []
    with mx.stream(gen.stream):
        while len(stamps) < tokens:
            _, rs = gen._next()
            stamps.extend(time.perf_counter() for _ in rs)
            if any(r.finish_reason for r in rs):
                break
    return _rate(stamps)


def _request(prompt: list[int], tokens: int, i: int) -> Any:
    from mlx_server.engine.types import GenerationRequest, SamplingParams

    sp = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    return GenerationRequest(f"gap-{i}", prompt, sp)


def core(loaded: Any, config: Any, prompt: list[int], tokens: int, i: int) -> float:
    from mlx_server.engine.core import EngineCore

    c = EngineCore(loaded, config)
    stamps: list[float] = []
    done: list[bool] = []

    def emit(o: Any) -> None:
        stamps.append(time.perf_counter())
        if o.finish_reason:
            done.append(True)

    c.submit(_request(prompt, tokens, i), emit)
    while not done:
        c.step()
    return _rate(stamps)


async def _consume(engine: Any, prompt: list[int], tokens: int, i: int, load: bool) -> float:
    stamps: list[float] = []
    stop = asyncio.Event()

    async def http_like() -> None:  # ~what an SSE writer does per token, every 1 ms
        while not stop.is_set():
            json.dumps({"id": "x", "choices": [{"index": 0, "delta": {"content": "abc" * 5}}]})
            await asyncio.sleep(0.001)

    side = asyncio.create_task(http_like()) if load else None
    async for out in engine.generate(_request(prompt, tokens, i)):
        stamps.extend(time.perf_counter() for _ in (out.token_ids or [None]))
    stop.set()
    if side is not None:
        await side
    return _rate(stamps)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import mlx.core as mx

    from mlx_server.config import EngineConfig
    from mlx_server.engine.async_engine import AsyncEngine
    from mlx_server.engine.loader import load_model

    loaded = load_model(args.model)
    config = EngineConfig()
    vocab = loaded.vocab_size
    res: dict[str, list[float]] = {"bare": [], "core": [], "async": [], "async+load": []}
    engine = AsyncEngine(lambda: loaded, config, "gap")
    engine.start()
    engine.wait_ready(600)
    for i in range(args.reps):
        prompt = mx.random.randint(0, vocab, (PROMPT,)).tolist()
        res["bare"].append(bare(loaded.model, prompt, args.tokens))
        res["core"].append(core(loaded, config, prompt, args.tokens, i))
        res["async"].append(asyncio.run(_consume(engine, prompt, args.tokens, 100 + i, False)))
        res["async+load"].append(asyncio.run(_consume(engine, prompt, args.tokens, 200 + i, True)))
        print({k: round(v[-1], 1) for k, v in res.items()}, flush=True)
    engine.shutdown()
    summary = {k: round(statistics.median(v), 1) for k, v in res.items()}
    print("decode tok/s (median):", summary)
    if args.out:
        args.out.write_text(json.dumps({"device": str(mx.default_device()), "runs": res,
                                        "median": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
