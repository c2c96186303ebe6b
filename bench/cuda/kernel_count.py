"""How many kernels one decode step launches, with each kernel-cutting module on or off.

Counts the primitives in the graph of one greedy decode step (`mx.export_to_dot`), split
into views (no kernel: reshape, slice, broadcast, transpose, ...) and the rest, for one
sequence over the model's own caches (B=1) and for 32 sequences over mlx-lm's batched
caches (what BatchGenerator decodes with). On MLX's CPU backend the `mx.fast` ops fall
back to several primitives each, so counts that mean kernels come from a GPU run.
With `--cupti`, also counts the CUDA kernels PyTorch's profiler sees over a few steps.

    python -m bench.cuda.kernel_count --model DIR [--out FILE.json] [--cupti]
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import re
from pathlib import Path
from typing import Any

# Primitives that make a view or nothing at all on either backend (when input is contiguous).
VIEWS = {"Broadcast", "Reshape", "Slice", "Transpose", "ExpandDims", "Squeeze", "AsStrided",
         "StopGradient", "Depends", "Flatten", "Unflatten", "BroadcastAxes"}


def graph_counts(arrays: Any) -> collections.Counter[str]:
    import mlx.core as mx

    f = io.StringIO()
    mx.export_to_dot(f, *arrays)
    return collections.Counter(re.findall(r'\[label ="([^"]+)", shape=rectangle\]', f.getvalue()))


def _summary(c: collections.Counter[str]) -> dict[str, Any]:
    kernels = {k: v for k, v in c.items() if k not in VIEWS}
    return {"kernels": sum(kernels.values()), "views": sum(c.values()) - sum(kernels.values()),
            "by_primitive": dict(sorted(kernels.items(), key=lambda kv: -kv[1]))}


def _prepared(model: Any, batch: int) -> tuple[list[Any], Any]:
    """Caches holding 16 prompt tokens per row, and the next input tokens."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    caches = []
    for i in range(batch):
        c = make_prompt_cache(model)
        mx.eval(model(mx.random.randint(0, 1000, (1, 16), key=mx.random.key(i)), cache=c))
        caches.append(c)
    cache = caches[0] if batch == 1 else [type(cs[0]).merge(list(cs)) for cs in zip(*caches)]
    mx.eval([c.state for c in cache])
    return cache, mx.zeros((batch,), mx.int32)


def _step(model: Any, cache: list[Any], y: Any) -> tuple[Any, Any]:
    import mlx.core as mx

    logits = model(y[:, None], cache=cache)[:, -1, :]
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return mx.argmax(logprobs, axis=-1), logprobs


def _cupti(model: Any, batch: int, steps: int = 8) -> float | None:
    """CUDA kernels per step as PyTorch's profiler (CUPTI) sees them, or None without CUDA."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile

        if not torch.cuda.is_available():
            return None
    except ImportError:
        return None
    import mlx.core as mx

    cache, y = _prepared(model, batch)
    mx.eval(_step(model, cache, y))
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            y, lp = _step(model, cache, y)
            mx.eval(y, lp)
    names = collections.Counter(e.name for e in prof.events()
                                if e.device_type == torch.autograd.DeviceType.CUDA)
    return sum(names.values()) / steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--cupti", action="store_true")
    ap.add_argument("--on-cpu", action="store_true", help="install the GPU-only modules on CPU too")
    args = ap.parse_args(argv)

    import mlx.core as mx
    from mlx_lm.utils import load_model

    from mlx_server.engine import gelu_gate, norm_scale, proj_fuse

    model, _ = load_model(args.model)  # mlx-lm's stock model, none of our loader's modules
    variants = [("stock", lambda: None), ("+norm_scale", lambda: norm_scale.install(model)),
                ("+gelu_gate", lambda: gelu_gate.install(model, on_cpu=args.on_cpu)),
                ("+proj_fuse", lambda: proj_fuse.install(model, on_cpu=args.on_cpu))]
    result: dict[str, Any] = {"device": str(mx.default_device())}
    for name, install in variants:  # cumulative: each adds one module to the one before
        install()
        result[name] = {f"B={b}": _summary(graph_counts(_step(model, *_prepared(model, b))))
                        for b in (1, 32)}
        if args.cupti:
            for b in (1, 32):
                try:
                    result[name][f"cupti_B={b}"] = _cupti(model, b)
                except Exception as e:  # noqa: BLE001 - the graph counts above still stand
                    result[name][f"cupti_B={b}"] = f"failed: {e!r}"[:200]
        print(name, {k: (v["kernels"] if isinstance(v, dict) else v) for k, v in result[name].items()},
              flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
