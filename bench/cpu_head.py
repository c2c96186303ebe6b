"""Decode speed on MLX's CPU backend with and without the gemv output projection
(`mlx_server/engine/cpu_head.py`), on a model folder (default: the embedded Gemma 3 270M).

    python -m bench.cpu_head [--model DIR] [--steps 32] [--batch 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import load_model

from mlx_server.platform import ensure_fast_blas


def decode_tps(model, batch: int, steps: int) -> tuple[float, list[int]]:
    cache = make_prompt_cache(model)
    prompt = mx.array([[2, 651, 6037, 529, 7001, 563] * 8] * batch)
    logits = model(prompt, cache=cache)[:, -1]
    tok = mx.argmax(logits, axis=-1)
    mx.eval(tok)
    out, t0 = [], time.perf_counter()
    for _ in range(steps):
        tok = mx.argmax(model(tok[:, None], cache=cache)[:, -1], axis=-1)
        mx.eval(tok)
        out.append(tok[0].item())
    return batch * steps / (time.perf_counter() - t0), out


def main() -> None:
    # Measured as the server runs: with OpenBLAS preloaded (mlx_server/platform.py).
    ensure_fast_blas(sys.argv[1:], module="bench.cpu_head")
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    mx.set_default_device(mx.cpu)
    path = args.model
    if path is None:
        from mlx_server.loading.default_model import default_model_path
        path = default_model_path()
    model, _ = load_model(path)
    model.set_dtype(mx.float32)
    mx.eval(model.parameters())
    base, base_toks = decode_tps(model, args.batch, args.steps)
    from mlx_server.engine import cpu_head
    assert cpu_head.install(model)
    fast, fast_toks = decode_tps(model, args.batch, args.steps)
    print(f"batch {args.batch}: MLX sgemm {base:.2f} tok/s | gemv head {fast:.2f} tok/s "
          f"({fast / base:.2f}x, same greedy tokens: {base_toks == fast_toks})")


if __name__ == "__main__":
    main()
