"""A vision-language model on the real server process: tiny random-weight Gemma 3 and
Qwen2.5-VL folders (mlx-vlm's classes) served with -m, images sent with the openai SDK."""

from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image

from .conftest import start_server

pytestmark = pytest.mark.e2e


def _data_url(color) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, "JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module", params=["gemma3", "qwen2_5_vl"])
def sdk(request, tmp_path_factory):
    pytest.importorskip("mlx_vlm", reason="vision needs the 'vision' extra")
    from tiny_vlm import build_gemma3_vlm, build_qwen_vlm

    out = tmp_path_factory.mktemp("vlm") / f"tiny-{request.param}-vlm"
    path = build_gemma3_vlm(out) if request.param == "gemma3" else build_qwen_vlm(out)
    srv = start_server(tmp_path_factory, "-m", str(path))
    yield openai.OpenAI(base_url=srv.base + "/v1", api_key="unused", max_retries=0, timeout=120)
    srv.stop()


def _ask(sdk, *urls):
    content = [{"type": "text", "text": "Describe the image."}]
    content += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    r = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": content}],
                                    max_tokens=5, temperature=0, logprobs=True)
    return [(t.token, round(t.logprob, 4)) for t in r.choices[0].logprobs.content], r.usage


def test_images_through_the_sdk(sdk):
    red, _ = _ask(sdk, _data_url((255, 0, 0)))
    blue, _ = _ask(sdk, _data_url((0, 0, 255)))
    assert red != blue
    again, usage2 = _ask(sdk, _data_url((255, 0, 0)))
    assert again == red and usage2.prompt_tokens_details.cached_tokens > 0
    two, _ = _ask(sdk, _data_url((255, 0, 0)), _data_url((0, 0, 255)))
    assert len(two) == 5


def test_a_corrupt_image_is_a_400(sdk):
    with pytest.raises(openai.BadRequestError) as e:
        _ask(sdk, "data:image/png;base64,aGVsbG8=")
    assert e.value.code == "invalid_image" and e.value.param == "messages.0.content.1.image_url"
