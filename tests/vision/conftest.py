"""A tiny random-weight Gemma 3 VLM (mlx-vlm's classes) and images to show it."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

pytest.importorskip("mlx_vlm", reason="vision needs the 'vision' extra")

from tiny_vlm import build_gemma3_vlm


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    return build_gemma3_vlm(tmp_path_factory.mktemp("vlm") / "gemma3-vlm")


def image_bytes(color=(255, 0, 0), size=(40, 30)) -> tuple[bytes, str]:
    """A PNG and its SHA-256: what the HTTP layer hands the engine."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session", params=["qwen2_5_vl", "qwen3_vl"])
def tiny_qwen_dir(request, tmp_path_factory):
    from tiny_vlm import build_qwen_vlm

    return build_qwen_vlm(tmp_path_factory.mktemp("vlm") / request.param, request.param)


def chat_messages(n_images=1, text="Describe the image."):
    """One user turn with `n_images` image parts between two text parts."""
    parts = [{"type": "text", "text": text}] + [{"type": "image"}] * n_images
    return [{"role": "user", "content": parts + [{"type": "text", "text": "What is in it?"}]}]


def chat_prompt(loaded, n_images=1):
    """`chat_messages` through the model's chat template, as token ids."""
    tok = loaded.tokenizer
    text = tok.apply_chat_template(chat_messages(n_images), add_generation_prompt=True,
                                   tokenize=False)
    return list(tok.encode(text, add_special_tokens=False))


def running_engine(path, name):
    """An AsyncEngine on `path`, ready; a generator for module-scoped fixtures."""
    from mlx_server.config import EngineConfig
    from mlx_server.engine.async_engine import AsyncEngine
    from mlx_server.engine.loader import load_model

    eng = AsyncEngine(lambda: load_model(path), EngineConfig(max_slots=2), name)
    eng.start()
    assert eng.wait_ready(120)
    yield eng
    eng.shutdown()
