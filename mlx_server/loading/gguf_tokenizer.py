"""Build a `tokenizers.Tokenizer` from GGUF tokenizer metadata.

Two vocabulary kinds exist in the files we support:
- "llama": SentencePiece-style BPE over `▁`-spelled pieces with byte fallback (Llama 2, Gemma).
  The file has no merges; they are rebuilt from the vocabulary, ranked by score, except for
  Gemma, whose scores are flat and whose merge order is the file order.
- "gpt2": byte-level BPE with explicit merges (Llama 3, Qwen); the pre-tokenizer regex is
  chosen from `tokenizer.ggml.pre`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers.models import BPE

from .errors import GGUFImportError
from .gguf_file import GGUFFile

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# `tokenizer.ggml.pre` values (llama.cpp's names) -> the split regex their merges were learned on.
PRE_TOKENIZER_SPLITS = {
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}


@dataclass
class GGUFTokenizer:
    """The rebuilt tokenizer plus the special-token facts tokenizer_config.json needs."""

    tokenizer: Tokenizer
    tokens: list[str]
    special_ids: dict[str, int]  # "bos_token" / "eos_token" / "unk_token" / "pad_token" -> id
    add_bos_token: bool
    add_eos_token: bool

    def token(self, role: str) -> str | None:
        token_id = self.special_ids.get(role)
        return None if token_id is None else self.tokens[token_id]


def build_tokenizer(gguf: GGUFFile) -> GGUFTokenizer:
    """Rebuild the tokenizer a GGUF describes; raise `GGUFImportError` if it cannot."""
    md = gguf.metadata
    kind = md.get("tokenizer.ggml.model")
    tokens = md.get("tokenizer.ggml.tokens")
    if not tokens:
        raise GGUFImportError(f"{gguf.path}: the file has no tokenizer vocabulary")
    types = np.asarray(md.get("tokenizer.ggml.token_type", np.ones(len(tokens), np.int32)))
    special_ids = _special_ids(md, len(tokens))
    if kind == "llama":
        tokenizer, tokens = _sentencepiece_bpe(gguf, list(tokens), special_ids)
        add_bos_default = True
    elif kind == "gpt2":
        tokenizer = _byte_level_bpe(gguf, list(tokens))
        add_bos_default = False
    else:
        raise GGUFImportError(
            f"{gguf.path}: unsupported tokenizer model {kind!r}; supported: llama, gpt2"
        )
    _add_special_tokens(tokenizer, tokens, types, special_ids)
    add_bos = bool(md.get("tokenizer.ggml.add_bos_token", add_bos_default))
    add_eos = bool(md.get("tokenizer.ggml.add_eos_token", False))
    add_bos = add_bos and "bos_token" in special_ids
    add_eos = add_eos and "eos_token" in special_ids
    tokenizer.post_processor = _post_processor(tokens, special_ids, add_bos, add_eos, kind)
    return GGUFTokenizer(tokenizer, tokens, special_ids, add_bos, add_eos)


def _special_ids(md: dict[str, Any], n_tokens: int) -> dict[str, int]:
    ids = {}
    for role, key in (
        ("bos_token", "bos_token_id"),
        ("eos_token", "eos_token_id"),
        ("unk_token", "unknown_token_id"),
        ("pad_token", "padding_token_id"),
    ):
        value = md.get(f"tokenizer.ggml.{key}")
        # llama.cpp writes -1 (as uint32 max) for "none".
        if value is not None and 0 <= int(value) < n_tokens:
            ids[role] = int(value)
    return ids


def _sentencepiece_bpe(
    gguf: GGUFFile, tokens: list[str], special_ids: dict[str, int]
) -> tuple[Tokenizer, list[str]]:
    gemma = gguf.architecture.startswith("gemma")
    if gemma:
        # Gemma files store runs of spaces as real spaces; the model sees them as `▁` runs.
        tokens = ["\u2581" * len(t) if " " in t and not t.strip() else t for t in tokens]
        ranks = [-i for i in range(len(tokens))]
    else:
        ranks = list(gguf.metadata.get("tokenizer.ggml.scores", [0.0] * len(tokens)))
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = derive_merges(vocab, dict(zip(tokens, ranks, strict=True)))
    unk = tokens[special_ids["unk_token"]] if "unk_token" in special_ids else None
    tok = Tokenizer(BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    spm_decode = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if bool(gguf.metadata.get("tokenizer.ggml.add_space_prefix", not gemma)):
        # Prepend unconditionally, as sentencepiece and llama.cpp do (" a" -> "▁▁a");
        # a Metaspace pre-tokenizer would skip the prefix when the text starts with a space.
        tok.normalizer = normalizers.Sequence(
            [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
        )
        tok.decoder = decoders.Sequence([*spm_decode, decoders.Strip(" ", 1, 0)])
    else:
        # The shape of transformers' GemmaTokenizer: spaces become `▁`, nothing is prepended.
        tok.normalizer = normalizers.Replace(" ", "\u2581")
        tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
        tok.decoder = decoders.Sequence(spm_decode)
    return tok, tokens


def derive_merges(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece vocabulary: every split of a piece into two
    pieces, best piece score first (the same ranking llama.cpp's SPM tokenizer applies)."""
    found = []
    for piece, score in scores.items():
        local = [
            (piece[:i], piece[i:], score)
            for i in range(1, len(piece))
            if piece[:i] in vocab and piece[i:] in vocab
        ]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        found.extend(local)
    found.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in found]


def _byte_level_bpe(gguf: GGUFFile, tokens: list[str]) -> Tokenizer:
    vocab = {t: i for i, t in enumerate(tokens)}
    raw_merges = gguf.metadata.get("tokenizer.ggml.merges")
    if raw_merges:
        merges = [tuple(m.split(" ", 1)) for m in raw_merges]
    else:
        merges = derive_merges(vocab, {t: -i for i, t in enumerate(tokens)})
    tok = Tokenizer(BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    pre = gguf.metadata.get("tokenizer.ggml.pre")
    split = PRE_TOKENIZER_SPLITS.get(pre)
    if split is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if pre and pre.startswith("qwen"):
        tok.normalizer = normalizers.NFC()  # as Qwen's own tokenizer.json does
    tok.decoder = decoders.ByteLevel()
    return tok


def _add_special_tokens(
    tok: Tokenizer, tokens: list[str], types: np.ndarray, special_ids: dict[str, int]
) -> None:
    """Control tokens (and bos/eos/unk/pad) stay whole and are special; user-defined tokens
    stay whole but are ordinary text. Both keep their vocabulary ids."""
    special = set(np.flatnonzero(types == _CONTROL).tolist()) | set(special_ids.values())
    vocab = tok.get_vocab()
    tok.add_special_tokens(
        [
            AddedToken(tokens[i], special=True, normalized=False)
            for i in sorted(special)
            if tokens[i]
        ]
    )
    user = [
        AddedToken(tokens[i], special=False, normalized=False)
        for i in np.flatnonzero(types == _USER_DEFINED).tolist()
        if vocab.get(tokens[i]) == i
    ]
    if user:
        tok.add_tokens(user)


def _post_processor(
    tokens: list[str], special_ids: dict[str, int], add_bos: bool, add_eos: bool, kind: str
) -> Any:
    steps = [processors.ByteLevel(trim_offsets=False)] if kind == "gpt2" else []
    wanted = [r for r, on in (("bos_token", add_bos), ("eos_token", add_eos)) if on]
    if wanted:
        ids = {tokens[special_ids[r]]: special_ids[r] for r in wanted}
        bos = [tokens[special_ids["bos_token"]]] if add_bos else []
        eos = [tokens[special_ids["eos_token"]]] if add_eos else []
        steps.append(
            processors.TemplateProcessing(
                single=" ".join([*bos, "$A", *eos]),
                pair=" ".join([*bos, "$A", *eos, *bos, "$B:1", *eos]),
                special_tokens=list(ids.items()),
            )
        )
    if not steps:
        return None
    return steps[0] if len(steps) == 1 else processors.Sequence(steps)
