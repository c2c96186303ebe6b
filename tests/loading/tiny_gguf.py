"""Tiny GGUF files written the way llama.cpp's converter writes them, with their references.

Each file carries random weights in several tensor types and a small real tokenizer (a
trained SentencePiece model or a trained byte-level BPE), so a test can compare an import
against the mlx-lm model built directly from the same weights and against the tokenizer the
vocabulary came from.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.quants import dequantize, quantize

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! How are you today? I am fine, thank you.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "def add(a, b):\n    return a + b\n",
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    "Numbers: 0 1 2 3 10 100 1000. Émoji ☃ and ünïcödé 日本語.",
] * 30
TEXTS = [
    "The capital of France is",
    "Hello  world!\n\n  indented\tand tabs",
    "ünïcödé ☃ 日本語 and unseen: Ω 🚀",
    " leading space, trailing space ",
    "",
]
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_BASE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=256,  # a multiple of 256 so ffn_down can hold K-quants
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-6,
    max_position_embeddings=256,
)
CONFIGS = {
    "llama": dict(
        _BASE, model_type="llama", head_dim=16, rope_theta=10000.0, tie_word_embeddings=False
    ),
    "qwen2": dict(_BASE, model_type="qwen2", rope_theta=1e6, tie_word_embeddings=False),
    # head_dim deliberately != hidden / heads
    "qwen3": dict(_BASE, model_type="qwen3", head_dim=32, rope_theta=1e6, tie_word_embeddings=True),
    "gemma3": dict(
        _BASE,
        model_type="gemma3_text",
        head_dim=32,
        num_key_value_heads=1,
        rope_theta=1e6,
        rope_local_base_freq=10000.0,
        query_pre_attn_scalar=32,
        sliding_window=4,
        sliding_window_pattern=2,
        tie_word_embeddings=True,
    ),
}
# mlx-lm suffix -> (GGUF suffix, tensor type); written independently of the importer's table.
_NAMES = {
    "input_layernorm": ("attn_norm", Q.F32),
    "self_attn.q_proj": ("attn_q", Q.Q5_0),
    "self_attn.k_proj": ("attn_k", Q.Q8_0),
    "self_attn.v_proj": ("attn_v", Q.Q4_1),
    "self_attn.o_proj": ("attn_output", Q.F16),
    "self_attn.q_norm": ("attn_q_norm", Q.F32),
    "self_attn.k_norm": ("attn_k_norm", Q.F32),
    "post_attention_layernorm": ("ffn_norm", Q.F32),
    "mlp.gate_proj": ("ffn_gate", Q.Q4_0),
    "mlp.up_proj": ("ffn_up", Q.BF16),
    "mlp.down_proj": ("ffn_down", Q.Q6_K),
}
_GEMMA_NAMES = {
    **_NAMES,
    "pre_feedforward_layernorm": ("ffn_norm", Q.F32),
    "post_attention_layernorm": ("post_attention_norm", Q.F32),
    "post_feedforward_layernorm": ("post_ffw_norm", Q.F32),
}
_GLOBALS = {
    "model.embed_tokens": ("token_embd", Q.Q8_0),
    "model.norm": ("output_norm", Q.F32),
    "lm_head": ("output", Q.Q5_1),
}


@dataclass
class TinyTokenizer:
    tokens: list[str]
    scores: list[float]
    types: list[int]
    special: dict[str, int]  # bos / eos / unk / pad ids
    encode: Callable[[str], list[int]]  # the reference, without bos
    model: str = "llama"
    pre: str = "default"
    merges: list[str] = field(default_factory=list)
    add_bos: bool = True
    add_space_prefix: bool = True


@dataclass
class TinyGGUF:
    path: Path
    config: dict  # the mlx-lm config of the reference model
    weights: dict[str, np.ndarray]  # mlx-lm names, HF layout, the values the file holds
    tokenizer: TinyTokenizer


def write_tiny_gguf(
    out_dir: Path,
    arch: str,
    *,
    chat_template: str | None = None,
    tensor_types: dict[str, Q] | None = None,
    tokenizer: str | None = None,
    seed: int = 0,
) -> TinyGGUF:
    """Write `<out_dir>/<arch>.gguf` (or `<arch>-<tokenizer>.gguf`) with its references.

    `tensor_types` overrides the type of named GGUF tensors; `tokenizer` picks the vocabulary
    ("llama2", "gemma", "qwen", "llama3"; by default the architecture's usual one).
    """
    kind = tokenizer or {"llama": "llama2", "gemma3": "gemma"}.get(arch, "qwen")
    tok = TOKENIZERS[kind]()
    config = dict(CONFIGS[arch], vocab_size=len(tok.tokens))
    rng = np.random.default_rng(seed)
    path = out_dir / (f"{arch}-{tokenizer}.gguf" if tokenizer else f"{arch}.gguf")
    writer = GGUFWriter(str(path), arch)
    _write_metadata(writer, arch, config, tok, chat_template)
    weights = {}
    for name, shape in _parameter_shapes(config).items():
        gguf_name, qtype, layer = _gguf_name(arch, name)
        qtype = (tensor_types or {}).get(gguf_name, qtype)
        value = _random(rng, name, shape, arch)
        stored, reference = _encode(value, qtype, layer)
        stored = _as_llama_cpp_writes(stored, arch, name, config, qtype)
        writer.add_tensor(gguf_name, stored, raw_dtype=qtype if stored.dtype == np.uint8 else None)
        weights[name] = reference
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return TinyGGUF(path, config, weights, tok)


def _write_metadata(w: GGUFWriter, arch: str, cfg: dict, tok: TinyTokenizer, template) -> None:
    w.add_name(f"tiny {arch}")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    if "head_dim" in cfg:
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
    if arch == "gemma3":
        w.add_sliding_window(cfg["sliding_window"])
        pattern = cfg["sliding_window_pattern"]
        w.add_sliding_window_pattern(
            [(i + 1) % pattern != 0 for i in range(cfg["num_hidden_layers"])]
        )
    w.add_tokenizer_model(tok.model)
    w.add_tokenizer_pre(tok.pre)
    w.add_token_list(tok.tokens)
    w.add_token_scores(tok.scores)
    w.add_token_types(tok.types)
    if tok.merges:
        w.add_token_merges(tok.merges)
    for role, token_id in tok.special.items():
        getattr(w, f"add_{role}_token_id")(token_id)
    w.add_add_bos_token(tok.add_bos)
    w.add_add_eos_token(False)
    if tok.model == "llama":
        w.add_add_space_prefix(tok.add_space_prefix)
    if template:
        w.add_chat_template(template)


def _parameter_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    model_cls, args_cls = _get_classes(config)
    model = model_cls(args_cls.from_dict(config))
    shapes = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}
    if config["tie_word_embeddings"]:
        shapes.pop("lm_head.weight", None)
    return shapes


def _gguf_name(arch: str, name: str) -> tuple[str, Q, int]:
    stem, kind = name.rsplit(".", 1)
    if stem in _GLOBALS:
        gguf, qtype = _GLOBALS[stem]
        return f"{gguf}.{kind}", qtype if kind == "weight" else Q.F32, -1
    _, _, layer, suffix = stem.split(".", 3)
    gguf, qtype = (_GEMMA_NAMES if arch == "gemma3" else _NAMES)[suffix]
    if kind == "bias":
        qtype = Q.F32
    elif suffix == "mlp.down_proj" and layer == "1":
        qtype = Q.Q4_K
    return f"blk.{layer}.{gguf}.{kind}", qtype, int(layer)


def _random(rng, name: str, shape, arch: str) -> np.ndarray:
    if name.endswith("norm.weight"):
        # Gemma norms are (1 + w) in the model, so w sits near 0; elsewhere near 1.
        center = 0.0 if arch == "gemma3" else 1.0
        return (center + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    return (0.2 * rng.standard_normal(shape)).astype(np.float32)


def _encode(value: np.ndarray, qtype: Q, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """(what goes in the file, what it dequantizes back to)."""
    if qtype == Q.F32:
        return value, value
    if qtype == Q.F64:
        return value.astype(np.float64), value
    if qtype in (Q.Q4_K, Q.Q6_K):
        stored = _random_k_quant(value.shape, qtype, layer)
    else:
        stored = quantize(value, qtype)
    return stored, dequantize(stored, qtype).astype(np.float32)


def _random_k_quant(shape, qtype: Q, seed: int) -> np.ndarray:
    """gguf-py cannot quantize K-types; random blocks with sane scales exercise the reader."""
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(100 + seed)
    raw = rng.integers(0, 256, (*shape[:-1], shape[-1] // block, size), dtype=np.uint8)
    scale = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
    if qtype == Q.Q6_K:
        raw[..., 208:210] = scale  # d is the last field
    else:
        raw[..., 0:2] = scale  # d
        raw[..., 2:4] = scale  # dmin
    return raw.reshape(*shape[:-1], -1)


def _as_llama_cpp_writes(stored, arch: str, name: str, cfg: dict, qtype: Q) -> np.ndarray:
    if arch == "llama" and (".q_proj." in name or ".k_proj." in name):
        heads = cfg["num_attention_heads" if ".q_proj." in name else "num_key_value_heads"]
        # Row permutation commutes with row-wise quantization, so permuting the stored
        # bytes equals quantizing the permuted weights (llama.cpp's order).
        return llama_cpp_permute(stored, heads)
    if arch == "gemma3" and name.endswith("norm.weight"):
        return stored + np.float32(1.0)  # llama.cpp's Gemma norm shift
    return stored


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def reference_weights(tiny: TinyGGUF) -> dict[str, np.ndarray]:
    """The HF-layout weights the importer must recover (gemma norms: (w + 1) - 1 in f32)."""
    if tiny.config["model_type"] != "gemma3_text":
        return tiny.weights
    return {
        k: (v + np.float32(1.0)) - np.float32(1.0) if k.endswith("norm.weight") else v
        for k, v in tiny.weights.items()
    }


def _train_spm(**options) -> object:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=buf,
        model_type="bpe",
        vocab_size=400,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        minloglevel=2,
        **options,
    )
    return spm.SentencePieceProcessor(model_proto=buf.getvalue())


def _spm_types(sp, user_defined: set[int]) -> list[int]:
    def kind(i: int) -> int:
        if sp.is_unknown(i):
            return 2
        if sp.is_control(i):
            return 3
        if sp.is_byte(i):
            return 6
        return 4 if i in user_defined else 1

    return [kind(i) for i in range(sp.get_piece_size())]


def _llama_spm() -> TinyTokenizer:
    """Llama 2 style: <unk>=0 <s>=1 </s>=2, a dummy-prefix space, scores rank the merges."""
    sp = _train_spm(add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    n = sp.get_piece_size()
    return TinyTokenizer(
        tokens=[sp.id_to_piece(i) for i in range(n)],
        scores=[sp.get_score(i) for i in range(n)],
        types=_spm_types(sp, set()),
        special={"bos": 1, "eos": 2, "unk": 0},
        encode=sp.encode,
    )


def _gemma_spm() -> TinyTokenizer:
    """Gemma style: pad/eos/bos/unk = 0..3, turn markers, no dummy prefix, flat scores, and
    space runs stored with real spaces as llama.cpp writes them."""
    sp = _train_spm(
        add_dummy_prefix=False,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        control_symbols=["<mask>", "<start_of_turn>", "<end_of_turn>"],
        user_defined_symbols=["\n", "\n\n", "\u2581\u2581", "\u2581\u2581\u2581"],
    )
    n = sp.get_piece_size()
    user = {sp.piece_to_id(p) for p in ["\n", "\n\n", "\u2581\u2581", "\u2581\u2581\u2581"]}
    tokens = [sp.id_to_piece(i) for i in range(n)]
    tokens = [t.replace("\u2581", " ") if i in user else t for i, t in enumerate(tokens)]
    return TinyTokenizer(
        tokens=tokens,
        scores=[0.0] * n,
        types=_spm_types(sp, user),
        special={"bos": 2, "eos": 1, "unk": 3, "pad": 0},
        encode=sp.encode,
        add_space_prefix=False,
    )


def _qwen_bpe() -> TinyTokenizer:
    """Qwen style: byte-level BPE with explicit merges, the qwen2 split, NFC, no BOS."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok, vocab = _train_byte_level(QWEN2_SPLIT, specials, nfc=True)
    return _byte_level_tokenizer(
        tok, vocab, specials, "qwen2", {"eos": "<|im_end|>", "pad": "<|endoftext|>"}, False
    )


def _llama3_bpe() -> TinyTokenizer:
    """Llama 3 style: byte-level BPE, the llama3 split, BOS added, <|eot_id|> ends a turn."""
    specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ]
    tok, vocab = _train_byte_level(LLAMA3_SPLIT, specials, nfc=False)
    roles = {"bos": "<|begin_of_text|>", "eos": "<|end_of_text|>", "eot": "<|eot_id|>"}
    return _byte_level_tokenizer(tok, vocab, specials, "llama-bpe", roles, True)


def _train_byte_level(split: str, specials: list[str], nfc: bool):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok, tok.get_vocab()


def _byte_level_tokenizer(tok, vocab, specials, pre, roles, add_bos) -> TinyTokenizer:
    import json

    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = json.loads(tok.to_str())["model"]["merges"]
    return TinyTokenizer(
        tokens=tokens,
        scores=[0.0] * len(tokens),
        types=[3 if t in specials else 1 for t in tokens],
        special={role: vocab[token] for role, token in roles.items()},
        encode=lambda text: tok.encode(text).ids,
        model="gpt2",
        pre=pre,
        merges=[m if isinstance(m, str) else " ".join(m) for m in merges],
        add_bos=add_bos,
    )


TOKENIZERS: dict[str, Callable[[], TinyTokenizer]] = {
    "llama2": _llama_spm,
    "gemma": _gemma_spm,
    "qwen": _qwen_bpe,
    "llama3": _llama3_bpe,
}
