"""One CPU decode path on and off, alternated inside one process (drift-proof ratios).

Runs our EngineCore (no HTTP) on bursts of N greedy requests with distinct ~100-token
prompts and alternates, run by run (order flipped every rep), between everything as
loaded and one path undone:

- `--off blocked`: few-row linear layers back on MLX's matmul (engine/cpu_blocked.py);
- `--off head`: the output projection's few-row sgemms as 2,048-row blocks on one thread,
  as before engine/cpu_head.py took the direct-kernel blocks on two threads;
- `--off panel`: the output projection through cpu_head.py's BLAS blocks instead of
  engine/panel_head.py's kernel over packed panels.

Prints each run's median decode step, the per-rep off/on ratio, and whether the greedy
tokens matched.

    python -m bench.cpu_ab --off blocked [--n 8] [--tokens 32] [--reps 6] [--model DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlx_server.platform import ensure_fast_blas


def _toggles(name: str, model: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    from mlx_server.engine import cpu_blocked, cpu_head, panel_head

    if name == "blocked":
        return (lambda: cpu_blocked.install(model)), (lambda: cpu_blocked.uninstall(model))
    if name == "panel":
        def to_blas() -> None:
            if panel_head.uninstall(model):
                cpu_head.install(model)

        def to_panel() -> None:
            cpu_head.uninstall(model)
            assert panel_head.installed(model) or panel_head.install(model), \
                "the panel kernel did not build"
        return to_panel, to_blas
    rows = cpu_head.block_rows

    def off() -> None:
        cpu_head.SPLIT = False
        cpu_head.block_rows = lambda n, cols: 2048

    def on() -> None:
        cpu_head.SPLIT = True
        cpu_head.block_rows = rows
    return on, off


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--off", choices=["blocked", "head", "panel"], required=True)
    ap.add_argument("--model", type=Path, help="model folder (default: the embedded Gemma 3 270M)")
    ap.add_argument("--n", type=int, default=8, help="requests per burst (the decode batch)")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=6)
    args = ap.parse_args(argv)

    from mlx_server.config import EngineConfig
    from mlx_server.engine.core import EngineCore
    from mlx_server.engine.loader import load_model
    from mlx_server.engine.types import GenerationRequest, SamplingParams
    from mlx_server.loading.default_model import default_model_path

    loaded = load_model(args.model or default_model_path())
    # no prefix cache: both runs of a rep read the same prompts in full
    core = EngineCore(loaded, EngineConfig(max_slots=args.n, enable_prefix_cache=False))
    on, off = _toggles(args.off, loaded.model)
    base = "Once upon a time in a small village by the sea there lived an old fisherman who " * 8
    sp = SamplingParams(max_tokens=args.tokens, temperature=0.0, ignore_eos=True)
    ratios, same = [], 0
    for rep in range(args.reps):
        step_ms, tokens = {}, {}
        prompts = [loaded.tokenizer.encode(f"[{rep}-{i}-{time.time()}] " + base)[:100]
                   for i in range(args.n)]
        for variant in (["on", "off"] if rep % 2 == 0 else ["off", "on"]):
            (on if variant == "on" else off)()
            got: dict[int, list[int]] = {i: [] for i in range(args.n)}
            for i, p in enumerate(prompts):
                core.submit(GenerationRequest(f"ab{rep}-{variant}-{i}", p, sp),
                            lambda o, i=i, g=got: g[i].extend(o.token_ids))
            steps = []
            while core.has_work():
                t = time.perf_counter()
                core.step()
                steps.append(time.perf_counter() - t)
            step_ms[variant] = statistics.median(steps[2:]) * 1000  # past prefill
            tokens[variant] = got
            print(f"rep {rep} {args.off}={variant}: median decode step {step_ms[variant]:.1f} ms",
                  flush=True)
        on()
        ratios.append(step_ms["off"] / step_ms["on"])
        same += tokens["on"] == tokens["off"]
    print(f"n={args.n} off/on step ratio per rep {[round(r, 3) for r in ratios]}, "
          f"median {statistics.median(ratios):.3f}; same greedy tokens in {same}/{args.reps} reps")
    return 0


if __name__ == "__main__":
    ensure_fast_blas(sys.argv[1:], "bench.cpu_ab")
    raise SystemExit(main())
