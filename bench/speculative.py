"""Speculative decoding on the default model: tokens per step and decode speed vs off.

`python -m bench.speculative`: greedy, one sequence per run, engine only (no HTTP), on a
repetitive prompt (code edit) and free text, for prompt lookup and the model as its own
draft (100% acceptance: shows the verify-step cost ceiling, not a real draft's speed).
"""

from __future__ import annotations

import argparse
import sys
import time

from mlx_server.config import EngineConfig, SpecConfig
from mlx_server.engine.core import EngineCore
from mlx_server.engine.loader import load_model
from mlx_server.engine.types import GenerationRequest, SamplingParams
from mlx_server.loading.default_model import default_model_path
from mlx_server.platform import ensure_fast_blas

CODE = ("Rename the variable `total` to `acc` in this code and print it again.\n\n"
        "def total_price(items):\n    total = 0\n    for item in items:\n"
        "        total += item.price * item.quantity\n    return total\n\n"
        "Here is the code with `total` renamed to `acc`:\n\ndef total_price(items):\n")
FREE = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def decode_rate(core: EngineCore, prompt: list[int], n: int) -> tuple[float, int]:
    """Decode tokens per second after the first token, and tokens generated."""
    times: list[float] = []
    done = []

    def emit(o):
        times.extend([time.perf_counter()] * len(o.token_ids))
        if o.finish_reason:
            done.append(o)
    core.submit(GenerationRequest(f"b{time.time_ns()}", prompt,
                                  SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True,
                                                 logprobs=True)), emit)
    while not done:
        core.step()
    return (len(times) - 1) / (times[-1] - times[0]), len(times)


def main() -> None:
    # Measured as the server runs: with OpenBLAS preloaded (mlx_server/platform.py).
    ensure_fast_blas(sys.argv[1:], module="bench.speculative")
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=32, help="tokens per run")
    ap.add_argument("--modes", default="off,ngram,draft=same", help="comma-separated; off first")
    ap.add_argument("--prompts", default="code-edit,free-text")
    args = ap.parse_args()
    path = default_model_path(progress=False)
    loaded = load_model(path)
    prompts = {"code-edit": loaded.tokenizer.encode(CODE), "free-text": loaded.tokenizer.encode(FREE)}
    modes = {"off": SpecConfig(), "ngram": SpecConfig(type="ngram", draft_max=8),
             "draft=same": SpecConfig(type="draft", draft_model=str(path), draft_max=4)}
    print(f"{'prompt':10} {'mode':11} {'tok/s':>7} {'vs off':>6} {'tok/step':>8} {'accept':>6}")
    chosen = args.modes.split(",")
    for pname in args.prompts.split(","):
        prompt, base = prompts[pname], None
        for mname in chosen:
            spec = modes[mname]
            core = EngineCore(loaded, EngineConfig(max_slots=1, enable_prefix_cache=False, spec=spec))
            decode_rate(core, prompt, 4)  # warm up
            before = dict(core.stats())
            rate, _ = decode_rate(core, prompt, args.n)
            s = {k: v - before[k] for k, v in core.stats().items() if k.startswith("spec_")}
            base = base or rate
            steps = s.get("spec_steps", 0)  # verify steps that had drafts
            per_step = (s["spec_accepted_tokens"] + steps) / steps if steps else 1.0
            acc = s["spec_accepted_tokens"] / s["spec_draft_tokens"] if steps else 0.0
            print(f"{pname:10} {mname:11} {rate:7.1f} {rate / base:6.2f} {per_step:8.2f} {acc:6.2f}")


if __name__ == "__main__":
    main()
