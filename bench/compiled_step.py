"""A compiled decode step over fixed-shape KV caches, measured beside the uncompiled one.

A small model's decode step is host-bound: on an H100, Gemma 3 270M's ~450 small kernels
and the Python that builds them cost more than the arithmetic (bench/cuda/RESULTS.md). On
MLX's CPU backend the same shows as a long chain of tiny single-threaded elementwise ops.
`mx.compile` can trace the step once and replay it (fusing elementwise chains), but only
if every step has the same shapes and no Python-int state. mlx-lm's caches grow and keep
their write position in Python ints, so they cannot be traced.

The engine's `FixedKV` (mlx_server/engine/compiled_decode.py) keeps both in arrays: a
buffer of fixed capacity per layer (the sliding window's layers a ring of the window's
size), each row's position an int32 array, the write a `put_along_axis` at that position,
the mask built from positions. The model's own `__call__` runs unchanged on it, so the
traced graph is the model's graph. Here it is driven directly, without the engine.

This tool checks that the compiled step's greedy tokens match mlx-lm's own caches and
then times, alternated rep by rep on the same prompt (drift-proof ratios):

- `stock`: the model over mlx-lm's caches (plain at one row, batched above), the step
  pipelined as generate_step pipelines (next step queued before the last is read);
- `fixed`: the same loop over `FixedKV`, uncompiled;
- `compiled`: the same loop, the step under `mx.compile`.

    python -m bench.compiled_step --model DIR [--batch 1] [--tokens 64] [--reps 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlx_server.engine.compiled_decode import FixedKV


def layer_kinds(model: Any) -> list[int | None]:
    """Per layer: the sliding window's size, or None for a full-attention layer (Gemma 3)."""
    args = model.args
    pattern, window = args.sliding_window_pattern, args.sliding_window
    return [None if i % pattern == pattern - 1 else window for i in range(args.num_hidden_layers)]


def empty_state(model: Any, batch: int, capacity: int, dtype: Any) -> list[mx.array]:
    """Flat [k0, v0, k1, v1, ..., positions] for `batch` rows and `capacity` tokens."""
    a = model.args
    state = []
    for window in layer_kinds(model):
        cap = min(window, capacity) if window else capacity
        shape = (batch, a.num_key_value_heads, cap, a.head_dim)
        state += [mx.zeros(shape, dtype), mx.zeros(shape, dtype)]
    return state + [mx.zeros((batch,), mx.int32)]


def make_step(model: Any) -> Any:
    kinds = layer_kinds(model)

    def step(tokens: mx.array, *state: mx.array) -> tuple[mx.array, ...]:
        pos = state[-1]
        caches = [FixedKV(state[2 * i], state[2 * i + 1], pos, w, [])
                  for i, w in enumerate(kinds)]
        logits = model(tokens, cache=caches)[:, -1, :]
        nxt = mx.argmax(logits, axis=-1).astype(mx.int32)
        out = [nxt]
        for c in caches:
            out += [c.keys, c.values]
        return (*out, pos + 1)

    return step


def run_fixed(step: Any, model: Any, prompt: list[int], batch: int, tokens: int,
              dtype: Any) -> tuple[list[int], float]:
    """Feed the prompt token by token (every row the same), then decode greedily; returns
    row 0's tokens and decode tok/s per row."""
    cap = ((len(prompt) + tokens + 255) // 256) * 256
    state = empty_state(model, batch, cap, dtype)
    tok = mx.array([[prompt[0]]] * batch, dtype=mx.int32)
    for t in prompt[1:]:
        out = step(tok, *state)
        state = list(out[1:])
        tok = mx.array([[t]] * batch, dtype=mx.int32)
    mx.eval(state)
    got, stamps = [], []
    out = step(tok, *state)
    mx.async_eval(out)
    for _ in range(tokens):
        nxt, state = out[0], list(out[1:])
        out = step(nxt[:, None], *state)  # queued before the last is read
        mx.async_eval(out)
        got.append(nxt[0].item())
        stamps.append(time.perf_counter())
    mx.eval(out)
    return got, (len(stamps) - 1) / (stamps[-1] - stamps[0])


def run_stock(model: Any, prompt: list[int], batch: int, tokens: int) -> tuple[list[int], float]:
    from mlx_lm.models.cache import make_prompt_cache

    if batch > 1:
        cache = _batched(model, batch, prompt)
    else:
        cache = make_prompt_cache(model)
        model(mx.array([prompt[:-1]]), cache=cache)
        mx.eval([c.state for c in cache])

    def fwd(tok: mx.array) -> mx.array:
        return mx.argmax(model(tok, cache=cache)[:, -1, :], axis=-1)

    got, stamps = [], []
    y = fwd(mx.array([[prompt[-1]]] * batch))
    mx.async_eval(y)
    for _ in range(tokens):
        nxt = fwd(y[:, None])
        mx.async_eval(nxt)
        got.append(y[0].item())
        stamps.append(time.perf_counter())
        y = nxt
    return got, (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _batched(model: Any, batch: int, prompt: list[int]) -> list[Any]:
    """mlx-lm's batched caches (what BatchGenerator decodes over), `batch` rows prefilled
    with the prompt but its last token."""
    from mlx_lm.models.cache import make_prompt_cache

    one = make_prompt_cache(model)
    model(mx.array([prompt[:-1]]), cache=one)
    mx.eval([c.state for c in one])
    return [c.merge([c] * batch) for c in one]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="model folder (default: the embedded Gemma 3 270M)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--stock-load", action="store_true",
                    help="load with mlx_lm.load (no mlx-server model changes); always so on "
                         "CPU, where the loader's BLAS and numpy paths sync the host mid-step")
    args = ap.parse_args(argv)

    from mlx_server.loading.default_model import default_model_path

    path = args.model or default_model_path()
    if args.stock_load or mx.default_device() == mx.cpu:
        from mlx_lm import load
        model, _ = load(str(path))
    else:
        from mlx_server.engine.loader import load_model
        model = load_model(path).model
    if not hasattr(model.args, "sliding_window_pattern"):
        raise SystemExit("this tool knows Gemma 3's layer layout only")
    dtype = model.model.embed_tokens.weight.dtype
    if dtype not in (mx.float32, mx.float16, mx.bfloat16):
        dtype = mx.float16
    vocab = model.args.vocab_size
    prompt = [2] + [3 + (1000 + 37 * i) % min(50000, vocab - 3) for i in range(args.prompt - 1)]
    step = make_step(model)
    compiled = mx.compile(step)
    paths = {
        "stock": lambda: run_stock(model, prompt, args.batch, args.tokens),
        "fixed": lambda: run_fixed(step, model, prompt, args.batch, args.tokens, dtype),
        "compiled": lambda: run_fixed(compiled, model, prompt, args.batch, args.tokens, dtype),
    }
    ref = None
    rates: dict[str, list[float]] = {k: [] for k in paths}
    for rep in range(args.reps):
        order = list(paths) if rep % 2 == 0 else list(reversed(paths))
        line = []
        for name in order:
            got, rate = paths[name]()
            ref = ref or got
            same = sum(a == b for a, b in zip(got, ref))
            rates[name].append(rate)
            line.append(f"{name} {rate:.1f} tok/s/row ({same}/{len(ref)} same)")
        print(f"rep {rep}: " + ", ".join(line), flush=True)
    for name in ("fixed", "compiled"):
        ratios = [a / b for a, b in zip(rates[name], rates["stock"])]
        print(f"{name}/stock per rep {[round(r, 2) for r in ratios]}, median {statistics.median(ratios):.2f}")
    print(f"batch {args.batch}: medians tok/s/row " + ", ".join(
        f"{k} {statistics.median(v):.1f}" for k, v in rates.items()))
    return 0


if __name__ == "__main__":
    import sys

    from mlx_server.platform import ensure_fast_blas

    ensure_fast_blas(sys.argv[1:], "bench.compiled_step")
    raise SystemExit(main())
