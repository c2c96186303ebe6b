"""Images on /v1/chat/completions: a real engine on a tiny Gemma 3, Qwen2.5-VL or Qwen3-VL
behind the HTTP app."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from mlx_server.config import AppConfig, EngineConfig, ServerConfig
from mlx_server.server import create_app

from .conftest import CHAT
from .fake_engine import FakeEngine

pytest.importorskip("mlx_vlm", reason="vision needs the 'vision' extra")


def _png(color, fmt="PNG") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


RED, BLUE = _png((255, 0, 0)), _png((0, 0, 255))


def _body(*urls, text="Describe the image.", **kw):
    parts = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"messages": [{"role": "user", "content": parts}], "max_tokens": 6,
            "temperature": 0, "logprobs": True, **kw}


@pytest.fixture(scope="module", params=["gemma3", "qwen2_5_vl", "qwen3_vl"])
def vlm_engine(request, tmp_path_factory):
    from tiny_vlm import build_gemma3_vlm, build_qwen_vlm

    from mlx_server.engine.async_engine import AsyncEngine
    from mlx_server.engine.loader import load_model

    out = tmp_path_factory.mktemp("vlm") / request.param
    path = build_gemma3_vlm(out) if request.param == "gemma3" else build_qwen_vlm(out, request.param)
    eng = AsyncEngine(lambda: load_model(path), EngineConfig(max_slots=2), "tiny-vlm").start()
    assert eng.wait_ready(120)
    yield eng
    eng.shutdown()


@pytest.fixture
async def client(vlm_engine):
    app = create_app(vlm_engine, AppConfig(server=ServerConfig(max_image_bytes=100_000)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app, raise_app_exceptions=False),
                                 base_url="http://testserver", timeout=60) as c:
        yield c


def _logprobs(body):
    return [(e["token"], round(e["logprob"], 4)) for e in body["choices"][0]["logprobs"]["content"]]


async def test_image_changes_the_answer_and_counts_as_prompt_tokens(client):
    red = (await client.post(CHAT, json=_body(RED))).json()
    blue = (await client.post(CHAT, json=_body(BLUE))).json()
    text_only = (await client.post(CHAT, json=_body())).json()
    assert _logprobs(red) != _logprobs(blue)
    assert red["usage"]["prompt_tokens"] > text_only["usage"]["prompt_tokens"]
    again = (await client.post(CHAT, json=_body(RED))).json()
    assert _logprobs(again) == _logprobs(red)
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


async def test_several_images_in_one_message_and_in_a_conversation(client, vlm_engine):
    two = (await client.post(CHAT, json=_body(RED, BLUE))).json()
    swapped = (await client.post(CHAT, json=_body(BLUE, RED))).json()
    assert _logprobs(two) != _logprobs(swapped)  # order matters: each sits where it was sent
    turn = {"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": RED}},
                                     {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A color."},
        {"role": "user", "content": [{"type": "text", "text": "And this?"},
                                     {"type": "image_url", "image_url": {"url": BLUE}}]}],
        "max_tokens": 3}
    assert (await client.post(CHAT, json=turn)).status_code == 200


@pytest.mark.parametrize("url, param, message", [
    ("data:image/png;base64,iVBORw0KGgoAAAAN", "messages.0.content.1.image_url", "decoded"),
    (_png((1, 2, 3), "TIFF"), "messages.0.content.1.image_url", "Unsupported image format"),
    ("data:image/png;base64," + "A" * 200_000, "messages.0.content.1.image_url", "limit"),
    ("https://example.com/cat.png", "messages.0.content.1.image_url", "--allow-image-urls"),
    ("http://127.0.0.1/cat.png", "messages.0.content.1.image_url", "--allow-image-urls"),
])
async def test_bad_images_are_400s(client, url, param, message):
    r = await client.post(CHAT, json=_body(url))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and message in err["message"]


async def test_private_urls_are_refused_even_when_urls_are_allowed(vlm_engine):
    app = create_app(vlm_engine, AppConfig(server=ServerConfig(allow_image_urls=True)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        r = await c.post(CHAT, json=_body("http://169.254.169.254/latest/meta-data.png"))
    assert r.status_code == 400 and "private or local" in r.json()["error"]["message"]


async def test_a_text_model_refuses_images():
    app = create_app(FakeEngine(), AppConfig())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        r = await c.post(CHAT, json=_body(RED))
    assert r.status_code == 400
    assert r.json()["error"]["message"] == ("Invalid content part: this model does not accept "
                                            "images.")
