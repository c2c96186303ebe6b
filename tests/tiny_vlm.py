"""A tiny random-weight Gemma 3 vision-language model folder, built with mlx-vlm's own classes:
SigLIP tower (32x32 images, 8x8 patches) + projector (4 image tokens) + Gemma 3 text model,
a real BPE tokenizer with Gemma's image tokens, a chat template that places images, and an
image processor config. mlx-lm loads its text half; mlx-vlm the rest."""

from __future__ import annotations

import json
from pathlib import Path

from tiny_model import CORPUS

IMAGE_TOKENS = 4  # mm_tokens_per_image
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
            "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<start_of_image>{% elif p['type'] == 'text' %}{{ p['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _tokenizer(out: Path) -> dict[str, int]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS + ["Describe the image.\n\nWhat is in it?"], trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>",
        "eos_token": "<end_of_turn>", "pad_token": "<pad>", "unk_token": "<unk>",
        "chat_template": TEMPLATE, "model_max_length": 512,
    }))
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    ids["vocab"] = tok.get_vocab_size()
    return ids


def build_gemma3_vlm(out: Path, seed: int = 0) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm.models import gemma3

    out.mkdir(parents=True, exist_ok=True)
    ids = _tokenizer(out)
    text = {"model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "vocab_size": ids["vocab"], "sliding_window": 16,
            "sliding_window_pattern": 2, "query_pre_attn_scalar": 16,
            "mm_tokens_per_image": IMAGE_TOKENS, "max_position_embeddings": 512,
            "rms_norm_eps": 1e-6}
    vision = {"model_type": "siglip_vision_model", "num_hidden_layers": 2, "hidden_size": 32,
              "intermediate_size": 64, "num_attention_heads": 2, "patch_size": 8,
              "image_size": 32, "layer_norm_eps": 1e-6}
    config = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
              "text_config": text, "vision_config": vision, "vocab_size": ids["vocab"],
              "hidden_size": 64, "image_token_index": ids["<image_soft_token>"],
              "boi_token_index": ids["<start_of_image>"], "eoi_token_index": ids["<end_of_image>"],
              "mm_tokens_per_image": IMAGE_TOKENS, "pad_token_id": ids["<pad>"],
              "eos_token_id": [ids["<end_of_turn>"], ids["<eos>"]]}
    mx.random.seed(seed)
    cfg = gemma3.ModelConfig.from_dict(config)
    cfg.text_config = gemma3.TextConfig.from_dict(text)
    cfg.vision_config = gemma3.VisionConfig.from_dict(vision)
    model = gemma3.Model(cfg)
    # Larger random weights than the init make outputs depend strongly on the input.
    weights = {k: v * 4 if v.ndim == 2 and "embed" not in k else v
               for k, v in tree_flatten(model.parameters()) if "lm_head" not in k}  # tied
    weights["multi_modal_projector.mm_input_projection_weight"] = mx.random.normal(
        (32, 64)) * 4
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config))
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Gemma3ImageProcessor", "do_resize": True,
        "size": {"height": 32, "width": 32}, "resample": 2, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True, "do_pan_and_scan": False,
    }))
    return out


# ---------------------------------------------------------------- Qwen2.5-VL / Qwen3-VL

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
# Qwen's template: each image part becomes <|vision_start|><|image_pad|><|vision_end|>.
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MERGE = 2  # spatial_merge_size: each image token stands for MERGE x MERGE patches


def _qwen_tokenizer(out: Path) -> dict[str, int]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=QWEN_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS + ["Describe the image.\n\nWhat is in it?"], trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "chat_template": QWEN_TEMPLATE, "model_max_length": 512,
    }))
    ids = {s: tok.token_to_id(s) for s in QWEN_SPECIALS}
    ids["vocab"] = tok.get_vocab_size()
    return ids


def build_qwen_vlm(out: Path, arch: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """A tiny Qwen2.5-VL (`arch="qwen2_5_vl"`) or Qwen3-VL (`"qwen3_vl"`, with deepstack)
    folder in the layout of mlx-community's conversions: text config at the top level for
    2.5 (as Qwen ships it), nested for 3; images of 1-4 x 1-4 tokens (one per 2x2 patches)."""
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten

    mod = importlib.import_module(f"mlx_vlm.models.{arch}")
    out.mkdir(parents=True, exist_ok=True)
    ids = _qwen_tokenizer(out)
    qwen3 = arch == "qwen3_vl"
    patch = 16 if qwen3 else 14
    text = {"model_type": "qwen3" if qwen3 else "qwen2", "hidden_size": 64,
            "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "vocab_size": ids["vocab"],
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 512,
            "tie_word_embeddings": True,
            # head_dim/2 = 8 frequencies split between t, h and w
            "rope_scaling": ({"rope_type": "default", "mrope_section": [4, 2, 2],
                              "mrope_interleaved": True} if qwen3 else
                             {"type": "mrope", "mrope_section": [2, 3, 3]})}
    vision = {"model_type": arch, "depth": 2, "hidden_size": 32, "intermediate_size": 64,
              "num_heads": 2, "out_hidden_size": 64, "patch_size": patch,
              "spatial_merge_size": MERGE, "temporal_patch_size": 2, "in_channels": 3}
    if qwen3:
        vision.update(num_position_embeddings=16, deepstack_visual_indexes=[0],
                      hidden_act="gelu_pytorch_tanh")
    else:
        vision.update(window_size=patch * MERGE * 2, fullatt_block_indexes=[1],
                      tokens_per_second=2)
    special = {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
               "vision_start_token_id": ids["<|vision_start|>"],
               "vision_end_token_id": ids["<|vision_end|>"],
               "vision_token_id": ids["<|vision_pad|>"]}
    config = {"model_type": arch, "vision_config": vision, **special,
              "eos_token_id": ids["<|im_end|>"], "bos_token_id": None,
              "tie_word_embeddings": True}
    config.update({"text_config": text} if qwen3 else text)
    config["model_type"] = arch
    mx.random.seed(seed)
    cfg = mod.ModelConfig.from_dict(dict(config))
    cfg.vision_config = mod.VisionConfig.from_dict(vision)
    cfg.text_config = mod.TextConfig.from_dict({**text, "model_type": arch} if not qwen3
                                               else text)
    model = mod.Model(cfg)
    # Larger random weights than the init make outputs depend strongly on the input.
    weights = {k: v * 3 if v.ndim == 2 and "embed" not in k else v
               for k, v in tree_flatten(model.parameters()) if "lm_head" not in k}
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config))
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor", "patch_size": patch,
        "temporal_patch_size": 2, "merge_size": MERGE, "do_resize": True,
        "min_pixels": (patch * MERGE * 2) ** 2, "max_pixels": (patch * MERGE * 4) ** 2,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
    }))
    return out
