"""Run one single-stream decode path for a while, for a sampling profiler to watch.

    py-spy record -f raw -o core.txt -- python -m bench.cuda.one_path --model DIR core
    (paths: `generator`, mlx-lm's BatchGenerator; `core`, our EngineCore)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("path", choices=("generator", "core"))
    args = ap.parse_args(argv)

    import mlx.core as mx

    from bench.cuda.serve_gap import bare, core
    from mlx_server.config import EngineConfig
    from mlx_server.engine.loader import load_model

    loaded = load_model(args.model)
    prompt = mx.random.randint(0, loaded.vocab_size, (128,)).tolist()
    for i in range(args.reps):
        rate = (core(loaded, EngineConfig(), prompt, args.tokens, i) if args.path == "core"
                else bare(loaded.model, prompt, args.tokens))
        print(args.path, round(rate, 1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
