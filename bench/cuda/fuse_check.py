"""Do engine/gelu_gate.py and engine/proj_fuse.py change a GPU's output? Greedy decode with
and without them on the same prompts (one row and a batch of rows), comparing tokens and
logits. On CPU the unit tests show bit-identical logits; a GPU may pick another matmul
kernel for the stacked weight's wider output, so this checks there.

    python -m bench.cuda.fuse_check --model DIR [--tokens 64] [--rows 1,8] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _greedy(model: Any, prompt: Any, tokens: int) -> tuple[list[list[int]], list[Any]]:
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    logits = model(prompt, cache=cache)[:, -1, :]
    out, all_logits = [], []
    for _ in range(tokens):
        y = mx.argmax(logits, axis=-1)
        all_logits.append(logits.astype(mx.float32))
        out.append(y.tolist())
        logits = model(y[:, None], cache=cache)[:, -1, :]
    return out, all_logits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rows", default="1,8")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import mlx.core as mx

    from mlx_server.engine import gelu_gate, proj_fuse
    from mlx_server.engine.loader import load_model

    loaded = load_model(args.model)
    model = loaded.model
    result: dict[str, Any] = {"device": str(mx.default_device())}
    for rows in (int(r) for r in args.rows.split(",")):
        prompt = mx.random.randint(0, loaded.vocab_size, (rows, 64), key=mx.random.key(rows))
        for m in (gelu_gate, proj_fuse):
            m.install(model, on_cpu=True)
        fused_tokens, fused_logits = _greedy(model, prompt, args.tokens)
        for m in (gelu_gate, proj_fuse):
            m.uninstall(model)
        tokens, logits = _greedy(model, prompt, args.tokens)
        first_diff = next((i for i, (a, b) in enumerate(zip(fused_logits, logits))
                           if not mx.array_equal(a, b).item()), None)
        r = {"tokens_equal": fused_tokens == tokens, "first_step_with_other_logits": first_diff,
             "max_abs_logit_diff_step0": mx.abs(fused_logits[0] - logits[0]).max().item(),
             "steps_with_same_argmax": sum(a == b for a, b in zip(fused_tokens, tokens))}
        result[f"rows={rows}"] = r
        print(f"rows={rows}", r, flush=True)
    for m in (gelu_gate, proj_fuse):
        m.install(model)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
