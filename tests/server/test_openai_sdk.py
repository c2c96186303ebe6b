"""The official `openai` SDK against a real uvicorn: what users will actually run."""

from __future__ import annotations

import httpx
import openai
import pytest

from mlx_server.engine.types import EngineError, QueueFullError

from .conftest import CHAT, USER_HI
from .fake_engine import SCRIPT, FakeEngine


@pytest.fixture
def sdk(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=5)


def test_chat(sdk, live):
    out = sdk.chat.completions.create(model="whatever", messages=USER_HI, max_tokens=4,
                                      temperature=0.5, seed=3, user="u", store=False,
                                      metadata={"k": "v"}, parallel_tool_calls=False)
    assert out.model == "fake-model"
    assert out.choices[0].message.content == "fox jumps over the"  # seed 3 starts at "fox"
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 4
    assert out.usage.prompt_tokens_details is not None
    assert out.usage.prompt_tokens_details.cached_tokens == 0


def test_chat_stream_with_usage(sdk):
    stream = sdk.chat.completions.create(model="m", messages=USER_HI, stream=True, n=2,
                                         stream_options={"include_usage": True})
    texts = {0: "", 1: ""}
    finish = {}
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
        usage = chunk.usage or usage
    assert texts == {0: " ".join(SCRIPT), 1: " ".join(SCRIPT)}
    assert finish == {0: "stop", 1: "stop"}
    assert usage is not None and usage.completion_tokens == 2 * len(SCRIPT)


def test_chat_logprobs(sdk):
    out = sdk.chat.completions.create(model="m", messages=USER_HI, max_tokens=2, logprobs=True,
                                      top_logprobs=2)
    content = out.choices[0].logprobs.content
    assert [t.token for t in content] == ["the", " quick"]
    assert [len(t.top_logprobs) for t in content] == [2, 2]
    assert content[0].bytes == list(b"the")


def test_chat_stop_and_n(sdk, live):
    out = sdk.chat.completions.create(model="m", messages=USER_HI, stop=["brown"], n=2, seed=0)
    assert [c.message.content for c in out.choices] == ["the quick ", "quick "]
    assert {r.sampling.seed for r in live.engine.requests} == {0, 1}


def test_completions(sdk):
    out = sdk.completions.create(model="m", prompt=["a", "b"], max_tokens=2, logprobs=1)
    assert [c.text for c in out.choices] == ["the quick", "the quick"]
    assert out.choices[0].logprobs.tokens == ["the", " quick"]
    assert out.choices[0].logprobs.text_offset == [0, 3]


def test_completions_stream(sdk):
    chunks = list(sdk.completions.create(model="m", prompt="a", max_tokens=3, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "the quick brown"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_models(sdk):
    assert [m.id for m in sdk.models.list()] == ["fake-model"]
    assert sdk.models.retrieve("fake-model").owned_by == "mlx-server"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("gpt-5")


def test_errors_reach_the_sdk_typed(sdk, live):
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model="m", messages=USER_HI, temperature=3)
    assert bad.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model="m", messages=USER_HI, extra_body={"bogus": 1})
    assert bad.value.body["param"] == "bogus"
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model="m", messages=USER_HI, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": "not a schema"}})
    assert bad.value.body["param"] == "response_format.json_schema.schema"
    live.engine = FakeEngine(raise_on_generate=QueueFullError(retry_after_s=2))
    with pytest.raises(openai.APIStatusError) as full:
        sdk.chat.completions.create(model="m", messages=USER_HI)
    assert full.value.status_code == 503
    assert full.value.response.headers["retry-after"] == "2"
    live.engine = FakeEngine(raise_on_generate=EngineError("hidden"))
    with pytest.raises(openai.InternalServerError) as internal:
        sdk.chat.completions.create(model="m", messages=USER_HI)
    assert "hidden" not in internal.value.response.text


def test_error_mid_stream_raises_in_the_sdk(sdk, live):
    live.engine = FakeEngine(raise_after=2)
    stream = sdk.chat.completions.create(model="m", messages=USER_HI, stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_extra_body_llama_server_fields(sdk, live):
    sdk.chat.completions.create(model="m", messages=USER_HI, max_tokens=1, extra_body={
        "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.2, "cache_prompt": True,
        "chat_template_kwargs": {"enable_thinking": False}})
    sp = live.engine.requests[0].sampling
    assert (sp.top_k, sp.min_p, sp.repetition_penalty) == (5, 0.1, 1.2)
    assert live.engine.renders[0]["template_kwargs"] == {"enable_thinking": False}


def test_oversized_body_over_a_real_socket(live):
    # The session server allows 64 KiB.
    big = {"messages": [{"role": "user", "content": "x" * 70_000}]}
    r = httpx.post(live.url + CHAT, json=big, timeout=5)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_malformed_json_over_a_real_socket(live):
    r = httpx.post(live.url + CHAT, content=b"{nope", timeout=5,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
