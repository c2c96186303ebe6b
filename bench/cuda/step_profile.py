"""Where one decode step's time goes for a small model, at batch 1, 8 and 32.

For each batch size, on a KV cache filled with a 128-token prompt:

- forward, one step at a time: host time to build the graph (Python: the model's
  `__call__` and sampling, lazily) and time to evaluate it (launches + kernels + sync);
- forward, K steps chained lazily and evaluated once: the device time of a step with
  the host's per-step work and syncs taken out (what a perfectly overlapped loop costs);
- the same serial loop with every layer's MLP under `mx.compile` (fewer, fused kernels);
- mlx-lm's BatchGenerator alone (what mlx_lm.server and our engine both drive), and our
  EngineCore around it (scheduling, detokenizing, stop strings, output objects).

    python -m bench.cuda.step_profile --model DIR [--batches 1,8,32] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

PROMPT = 128
STEPS = 48
CHAIN = 16


def _ms(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1000, 3)


def forward_split(model: Any, batch: int, vocab: int) -> dict[str, float]:
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    prompt = mx.random.randint(0, vocab, (batch, PROMPT))
    y = mx.argmax(model(prompt, cache=cache)[:, -1], axis=-1)
    mx.eval(y, [c.state for c in cache])
    build, evals = [], []
    for _ in range(STEPS):
        t0 = time.perf_counter()
        y = mx.argmax(model(y[:, None], cache=cache)[:, -1], axis=-1)
        t1 = time.perf_counter()
        mx.eval(y)
        build.append(t1 - t0)
        evals.append(time.perf_counter() - t1)
    chain_build, chain_eval = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(CHAIN):
            y = mx.argmax(model(y[:, None], cache=cache)[:, -1], axis=-1)
        t1 = time.perf_counter()
        mx.eval(y)
        chain_build.append((t1 - t0) / CHAIN)
        chain_eval.append((time.perf_counter() - t1) / CHAIN)
    return {"build_ms": _ms(build), "eval_ms": _ms(evals), "step_ms": _ms(
        [b + e for b, e in zip(build, evals)]), "chained_build_ms": _ms(chain_build),
        "chained_eval_ms": _ms(chain_eval)}


def compile_mlps(model: Any) -> int:
    """Wrap each layer's MLP in mx.compile (fixed shapes per batch size); returns layers."""
    import mlx.core as mx

    n = 0
    for layer in model.layers:
        mlp = getattr(layer, "mlp", None)
        if mlp is None:
            continue
        fn = mx.compile(mlp.__call__)

        class Compiled:  # a plain callable: nn.Module would re-register the parameters
            def __init__(self, f: Any):
                self.f = f

            def __call__(self, x: Any) -> Any:
                return self.f(x)

        # An instance attribute shadows the module's child of the same name.
        object.__setattr__(layer, "mlp", Compiled(fn))
        n += 1
    return n


def batch_generator(model: Any, batch: int, vocab: int, tokens: int = 64) -> dict[str, float]:
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator

    gen = BatchGenerator(model, completion_batch_size=batch, prefill_batch_size=batch,
                         stream=mx.new_stream(mx.default_device()))
    prompts = mx.random.randint(0, vocab, (batch, PROMPT)).tolist()
    gen.insert(prompts, max_tokens=[tokens] * batch)
    steps = []
    with mx.stream(gen.stream):
        while True:
            t0 = time.perf_counter()
            _, responses = gen._next()
            dt = time.perf_counter() - t0
            if len(responses) == batch:
                steps.append(dt)
            if not responses and not gen._unprocessed_sequences and not gen._prompt_batch \
                    and not len(gen._generation_batch):
                break
            if any(r.finish_reason for r in responses):
                break
    return {"step_ms": _ms(steps[2:]), "tok_s": round(batch / statistics.median(steps[2:]), 1)}


def engine_core(loaded: Any, batch: int, vocab: int, tokens: int = 64) -> dict[str, float]:
    import mlx.core as mx

    from mlx_server.config import EngineConfig
    from mlx_server.engine.core import EngineCore
    from mlx_server.engine.types import GenerationRequest, SamplingParams

    core = EngineCore(loaded, EngineConfig(max_slots=batch, enable_prefix_cache=False,
                                           max_queue=1024))
    inner: list[float] = []
    real_next = core.gen._next

    def timed_next() -> Any:
        t0 = time.perf_counter()
        out = real_next()
        inner.append(time.perf_counter() - t0)
        return out

    core.gen._next = timed_next  # type: ignore[method-assign]
    done: list[str] = []
    sp = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    for i in range(batch):
        ids = mx.random.randint(0, vocab, (PROMPT,)).tolist()
        core.submit(GenerationRequest(f"r{i}", ids, sp),
                    lambda o: done.append(o.request_id) if o.finish_reason else None)
    outer: list[float] = []
    while len(done) < batch:
        t0 = time.perf_counter()
        core.step()
        outer.append(time.perf_counter() - t0)
    decode = slice(len(outer) - tokens + 4, len(outer) - 2)  # steady decode steps only
    step, gen = outer[decode], inner[decode]
    return {"step_ms": _ms(step), "batch_generator_ms": _ms(gen),
            "engine_overhead_ms": _ms([s - g for s, g in zip(step, gen)]),
            "tok_s": round(batch / statistics.median(step), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    import mlx.core as mx
    from mlx.utils import tree_flatten

    from mlx_server.engine.loader import load_model

    loaded = load_model(Path(args.model))
    model, vocab = loaded.model, loaded.vocab_size
    weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    result: dict[str, Any] = {"device": str(mx.default_device()), "weight_bytes": weights,
                              "batches": {}}
    batches = [int(b) for b in args.batches.split(",")]
    for b in batches:
        r = result["batches"][str(b)] = {}
        r["forward"] = forward_split(model, b, vocab)
        r["batch_generator"] = batch_generator(model, b, vocab)
        r["engine_core"] = engine_core(loaded, b, vocab)
        print(b, json.dumps(r), flush=True)
    result["compiled_mlp_layers"] = compile_mlps(model)
    for b in batches:
        result["batches"][str(b)]["forward_compiled_mlp"] = forward_split(model, b, vocab)
        print(b, "compiled", json.dumps(result["batches"][str(b)]["forward_compiled_mlp"]),
              flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(_table(result))
    return 0


def _table(result: dict[str, Any]) -> str:
    header = ("| batch | build (host) ms | eval ms | step ms | chained: device ms/step | "
              "compiled-MLP step ms | BatchGenerator ms (tok/s) | EngineCore ms (tok/s) | "
              "engine's own ms |")
    rows = [header, "|" + "---|" * 9]
    for b, r in result["batches"].items():
        f, c = r["forward"], r.get("forward_compiled_mlp", {})
        g, e = r["batch_generator"], r["engine_core"]
        rows.append(f"| {b} | {f['build_ms']} | {f['eval_ms']} | {f['step_ms']} | "
                    f"{f['chained_eval_ms']} (+{f['chained_build_ms']} host) | "
                    f"{c.get('step_ms', '')} | {g['step_ms']} ({g['tok_s']}) | "
                    f"{e['step_ms']} ({e['tok_s']}) | {e['engine_overhead_ms']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
