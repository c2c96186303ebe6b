"""Grammar-constrained decoding: llguidance vs xgrammar mask time, and our per-token overhead.

    python -m bench.grammar_overhead              # both parts, default model
    python -m bench.grammar_overhead --skip-engine

Part 1 replays valid JSON documents token by token through each library's matcher on the
default model's tokenizer (Gemma 3, 262,144 tokens) and times every mask, plus the
per-schema compile. xgrammar is optional (`pip install xgrammar`; it pulls in torch).
Part 2 runs our engine on the default model: decode time per token with and without a
JSON-schema grammar, and the mask time the processor itself measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

CASES: list[tuple[dict[str, Any], Any]] = [
    ({"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                       "age": {"type": "integer", "minimum": 0, "maximum": 120}},
      "required": ["name", "age"], "additionalProperties": False},
     {"name": "Alice Smith", "age": 31}),
    ({"type": "object", "properties": {"tags": {"type": "array", "items": {
        "enum": ["red", "green", "blue"]}, "maxItems": 5}}, "required": ["tags"]},
     {"tags": ["red", "blue", "green"]}),
    ({"type": "object", "properties": {"user": {"type": "object", "properties": {
        "id": {"type": "integer"}, "email": {"type": "string", "format": "email"}},
        "required": ["id", "email"]}, "active": {"type": "boolean"}},
      "required": ["user", "active"]},
     {"user": {"id": 12345, "email": "bob@example.com"}, "active": True}),
    ({"type": "object", "properties": {"items": {"type": "array", "items": {
        "type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "number"}},
        "required": ["sku", "qty"]}}}, "required": ["items"]},
     {"items": [{"sku": "A-100", "qty": 2}, {"sku": "B-7", "qty": 0.5}]}),
    ({"type": "object"},
     {"title": "Free-form object", "nested": {"list": [1, 2, 3], "ok": None}}),
    ({"type": "object", "properties": {"date": {"type": "string",
                                                "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                                       "note": {"type": "string"}},
      "required": ["date", "note"]},
     {"date": "2025-01-31", "note": "A longer string value with several words in it."}),
]


def summarize(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(x * 1e3 for x in samples_s)
    return {"n": len(ms), "mean_ms": statistics.fmean(ms), "p50_ms": ms[len(ms) // 2],
            "p95_ms": ms[int(len(ms) * 0.95)], "max_ms": ms[-1]}


def bench_llguidance(model_dir: Path, hf_tok: Any, eos: list[int], vocab: int) -> dict[str, Any]:
    import llguidance
    import llguidance.numpy as lln

    t0 = time.perf_counter()
    table = llguidance.LLTokenizer((model_dir / "tokenizer.json").read_text(), n_vocab=vocab,
                                   eos_token=eos)
    setup = time.perf_counter() - t0
    masks, compiles = [], []
    bitmask = lln.allocate_token_bitmask(1, vocab)
    for schema, doc in CASES:
        t0 = time.perf_counter()
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False})
        matcher = llguidance.LLMatcher(table, grammar)
        compiles.append(time.perf_counter() - t0)
        for token in _tokens(hf_tok, doc) + [eos[0]]:
            t0 = time.perf_counter()
            lln.fill_next_token_bitmask(matcher, bitmask, 0)
            masks.append(time.perf_counter() - t0)
            assert matcher.consume_token(token), matcher.get_error()
    return {"tokenizer_setup_s": setup, "compile": summarize(compiles), "mask": summarize(masks)}


def bench_xgrammar(hf_tok: Any, eos: list[int], vocab: int) -> dict[str, Any] | None:
    try:
        import xgrammar as xgr
    except ImportError:
        return None
    t0 = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(hf_tok, vocab_size=vocab, stop_token_ids=eos)
    compiler = xgr.GrammarCompiler(info)
    setup = time.perf_counter() - t0
    masks, compiles, rejected = [], [], []
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    for schema, doc in CASES:
        t0 = time.perf_counter()
        compiled = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False,
                                                separators=(",", ":"))
        matcher = xgr.GrammarMatcher(compiled)
        compiles.append(time.perf_counter() - t0)
        for token in _tokens(hf_tok, doc) + [eos[0]]:
            t0 = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask, 0)
            masks.append(time.perf_counter() - t0)
            if not matcher.accept_token(token):
                rejected.append(CASES.index((schema, doc)))
                break
    return {"tokenizer_setup_s": setup, "compile": summarize(compiles), "mask": summarize(masks),
            "rejected_valid_documents": rejected}


def _tokens(hf_tok: Any, doc: Any) -> list[int]:
    return list(hf_tok.encode(json.dumps(doc, separators=(",", ":")), add_special_tokens=False))


async def bench_engine(model_dir: Path, tokens: int, reps: int) -> dict[str, Any]:
    from mlx_server.config import EngineConfig
    from mlx_server.engine.async_engine import AsyncEngine
    from mlx_server.engine.loader import load_model
    from mlx_server.engine.types import GenerationRequest, Grammar, SamplingParams

    eng = AsyncEngine(lambda: load_model(model_dir), EngineConfig(max_slots=1), "b").start()
    assert eng.wait_ready(300), eng.health()
    # A long array of free strings: the model keeps going, the grammar works every token.
    grammar = Grammar("json_schema", {"type": "array", "items": {"type": "string"}})
    prompt = eng.render_chat([{"role": "user", "content": "List many fruit names as JSON."}])
    out: dict[str, Any] = {}
    for label, g in (("plain", None), ("grammar", grammar), ("plain", None), ("grammar", grammar)):
        per_token = []
        for i in range(reps):
            sp = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=g is None,
                                grammar=g)
            outs = [o async for o in eng.generate(GenerationRequest(f"{label}{i}", prompt, sp))]
            last = outs[-1]
            per_token.append(last.decode_s / max(1, last.completion_tokens - 1))
        out[label] = summarize(per_token)  # the second round (warm) wins
    eng.shutdown()
    out["overhead_ms_per_token"] = out["grammar"]["p50_ms"] - out["plain"]["p50_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="MLX model folder (default: the embedded model)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-engine", action="store_true")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from mlx_server.loading.default_model import default_model_path

    model_dir = args.model or default_model_path()
    hf_tok = AutoTokenizer.from_pretrained(str(model_dir))
    config = json.loads((model_dir / "config.json").read_text())
    vocab = int(config.get("vocab_size") or len(hf_tok))
    eos = config.get("eos_token_id", hf_tok.eos_token_id)
    eos = eos if isinstance(eos, list) else [eos]
    report: dict[str, Any] = {"vocab_size": vocab,
                              "llguidance": bench_llguidance(model_dir, hf_tok, eos, vocab),
                              "xgrammar": bench_xgrammar(hf_tok, eos, vocab)}
    if not args.skip_engine:
        report["engine"] = asyncio.run(bench_engine(model_dir, args.tokens, args.reps))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
