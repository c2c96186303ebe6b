"""Our EngineCore alone (no HTTP) on a burst of N greedy requests: the in-process ceiling
that the served aggregate at N clients is compared with. Each rep also drives mlx-lm's
BatchGenerator directly on the same prompts (`generator`), back to back, so the engine's
own share of a step shows despite host drift. With `--ab`, each rep also runs the engine
with engine/gelu_gate.py and engine/proj_fuse.py undone (`engine/-fuse`), first on odd reps.

    python -m bench.cuda.engine_burst --model DIR [--n 32] [--tokens 64] [--reps 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ab", action="store_true", help="also run the engine without the fusions")
    args = ap.parse_args(argv)

    from mlx_server.config import EngineConfig
    from mlx_server.engine import gelu_gate, proj_fuse
    from mlx_server.engine.core import EngineCore
    from mlx_server.engine.loader import load_model

    loaded = load_model(args.model)
    core = EngineCore(loaded, EngineConfig(max_slots=args.n))
    base = "Once upon a time in a small village by the sea there lived an old fisherman who " * 8
    for rep in range(args.reps):
        t0 = time.perf_counter()

        def encode(tag: str, rep: int = rep, t0: float = t0) -> list[list[int]]:  # distinct ~100-token prompts: no prefix-cache hits
            return [loaded.tokenizer.encode(f"[{tag}{rep}-{i}-{t0}] " + base)[:100] for i in range(args.n)]

        prompts = encode("")
        order = [True, False] if rep % 2 == 0 else [False, True]
        for fused in order if args.ab else [True]:
            undone = [] if fused else [m for m in (gelu_gate, proj_fuse) if m.uninstall(loaded.model)]
            try:
                _report("engine" if fused else "engine/-fuse", args, *_burst(core, prompts if fused else encode("u"), rep, args))
            finally:
                for m in undone:
                    m.install(loaded.model)
        _report("generator", args, *_generator(loaded.model, prompts, args))
    return 0


def _burst(core: object, prompts: list[list[int]], rep: int, args: argparse.Namespace) -> tuple[float, list[float]]:
    from mlx_server.engine.types import GenerationRequest, SamplingParams

    sp = SamplingParams(max_tokens=args.tokens, temperature=0.0, ignore_eos=True)
    t0 = time.perf_counter()
    for i, prompt in enumerate(prompts):
        core.submit(GenerationRequest(f"b{rep}-{i}-{t0}", prompt, sp), lambda out: None)  # type: ignore[attr-defined]
    steps = []
    while core.has_work():  # type: ignore[attr-defined]
        s = time.perf_counter()
        core.step()  # type: ignore[attr-defined]
        steps.append(time.perf_counter() - s)
    return time.perf_counter() - t0, steps


def _generator(model: object, prompts: list[list[int]], args: argparse.Namespace) -> tuple[float, list[float]]:
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator

    gen = BatchGenerator(model, completion_batch_size=args.n, prefill_batch_size=args.n,
                         stream=mx.new_stream(mx.default_device()))
    t0 = time.perf_counter()
    gen.insert(prompts, max_tokens=[args.tokens] * len(prompts))
    steps, done = [], 0
    with mx.stream(gen.stream):
        while done < len(prompts):
            s = time.perf_counter()
            _, rs = gen._next()
            steps.append(time.perf_counter() - s)
            done += sum(1 for r in rs if r.finish_reason)
    return time.perf_counter() - t0, steps


def _report(name: str, args: argparse.Namespace, wall: float, steps: list[float]) -> None:
    print(f"{name} n={args.n} wall {wall:.2f} s, aggregate {args.n * args.tokens / wall:.1f} tok/s, "
          f"{len(steps)} steps, median step {sorted(steps)[len(steps) // 2] * 1000:.2f} ms", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
