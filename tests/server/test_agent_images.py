"""Images through Anthropic's image blocks and the Responses API's input_image parts reach a
vision model exactly as chat's image_url parts do (a tiny Gemma 3 VLM behind the app)."""

from __future__ import annotations

import httpx
import pytest

from mlx_server.config import AppConfig

from .test_vision import RED, vlm_engine  # noqa: F401  (the module-scoped engine fixture)

pytest.importorskip("mlx_vlm", reason="vision needs the 'vision' extra")

QUESTION = "Describe the image."


@pytest.fixture
async def client(vlm_engine):  # noqa: F811
    from mlx_server.server import create_app

    app = create_app(vlm_engine, AppConfig())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app, raise_app_exceptions=False),
                                 base_url="http://testserver", timeout=60) as c:
        yield c


async def test_image_blocks_render_like_chat_image_parts(client):
    chat = (await client.post("/v1/chat/completions", json={
        "max_tokens": 3, "temperature": 0, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": RED}},
            {"type": "text", "text": QUESTION}]}]})).json()
    media, data = RED.removeprefix("data:").split(";base64,")
    message = (await client.post("/v1/messages", json={
        "model": "claude-x", "max_tokens": 3, "temperature": 0, "messages": [
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": media,
                                             "data": data}},
                {"type": "text", "text": QUESTION}]}]})).json()
    response = (await client.post("/v1/responses", json={
        "max_output_tokens": 3, "temperature": 0, "input": [
            {"role": "user", "content": [{"type": "input_image", "image_url": RED},
                                         {"type": "input_text", "text": QUESTION}]}]})).json()
    prompt = chat["usage"]["prompt_tokens"]
    usage = message["usage"]
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == prompt
    assert response["usage"]["input_tokens"] == prompt
    text = chat["choices"][0]["message"]["content"].strip()  # blocks drop blank text
    assert "".join(b["text"] for b in message["content"]).strip() == text
    assert "".join(c["text"] for item in response["output"]
                   for c in item["content"]).strip() == text
