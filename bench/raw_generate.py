"""Raw mlx-lm baseline, run as a subprocess by ``bench.run`` (no HTTP).

Loads the model with ``mlx_lm.load`` and times ``mlx_lm.stream_generate`` (greedy,
EOS ignored so every run generates ``--max-tokens`` tokens). Each yielded response
is one token: TTFT = time to the first yield (prefill + first token); decode tok/s
= (tokens - 1) / (t_last - t_first). Prints one JSON object on the last stdout line.

    python -m bench.raw_generate --model DIR --prompt-file F --max-tokens 128 --reps 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-file", required=True)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup-tokens", type=int, default=8)
    args = ap.parse_args(argv)

    import mlx.core as mx
    from mlx_lm import load, stream_generate

    prompt_text = open(args.prompt_file, encoding="utf-8").read()
    t0 = time.perf_counter()
    model, tokenizer = load(args.model)
    load_s = time.perf_counter() - t0
    tokenizer.eos_token_ids = set()  # ignore EOS: always generate max_tokens
    prompt = tokenizer.encode(prompt_text)  # adds BOS like the servers do for raw text

    def one(max_tokens: int) -> dict:
        times = []
        last = None
        t_start = time.perf_counter()
        for resp in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens):
            times.append(time.perf_counter())
            last = resp
        n = len(times)
        ttft = times[0] - t_start if times else None
        dec = (n - 1) / (times[-1] - times[0]) if n >= 2 and times[-1] > times[0] else None
        return {
            "prompt_tokens": len(prompt),
            "output_tokens": n,
            "ttft": ttft,
            "decode_tps": dec,
            "e2e_s": (times[-1] - t_start) if times else None,
            "mlx_lm_prompt_tps": getattr(last, "prompt_tps", None),
            "mlx_lm_generation_tps": getattr(last, "generation_tps", None),
            "peak_memory_gb": getattr(last, "peak_memory", None),
        }

    one(args.warmup_tokens)
    runs = [one(args.max_tokens) for _ in range(args.reps)]
    out = {
        "load_s": load_s,
        "device": str(mx.default_device()),
        "runs": runs,
    }
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
