"""The real server on the real default model, driven by the official openai SDK over loopback."""

from __future__ import annotations

import concurrent.futures as cf
import json
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

pytestmark = pytest.mark.e2e

SCHEMAS = json.loads((Path(__file__).parents[1] / "server" / "openai_schemas.json").read_text())
PROMPT = "The capital of France is"
# Greedy continuation, checked independently against transformers' GGUF loader (MODELS.md).
REFERENCE = " the capital of the country of France"


def validate(body: dict, schema_name: str) -> None:
    schema = {"$defs": SCHEMAS["$defs"], "$ref": f"#/$defs/{schema_name}"}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(body))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_completion_matches_reference(client):
    raw = client.completions.with_raw_response.create(
        model="anything", prompt=PROMPT, max_tokens=8, temperature=0)
    r = raw.parse()
    assert r.choices[0].text.startswith(REFERENCE)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens == 6
    validate(raw.http_response.json(), "CreateCompletionResponse")


def test_completion_stream_equals_nonstream(client):
    chunks = list(client.completions.create(model="x", prompt=PROMPT, max_tokens=8,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices).startswith(REFERENCE)


def test_chat_nonstream_schema_and_usage(client, server):
    body = httpx.post(server.base + "/v1/chat/completions", timeout=120, json={
        "model": "gpt-4o", "max_tokens": 6, "temperature": 0,
        "messages": [{"role": "system", "content": "Answer briefly."},
                     {"role": "user", "content": [{"type": "text", "text": "Name a color."}]}],
    }).json()
    validate(body, "CreateChatCompletionResponse")
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] <= 6
    assert "cached_tokens" in body["usage"]["prompt_tokens_details"]


def test_chat_stream_include_usage(client):
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Say hello."}], max_tokens=6,
        temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish in (["length"], ["stop"])
    assert chunks[-1].usage.completion_tokens <= 6


def test_stop_sequence_cut_and_not_emitted(client):
    r = client.completions.create(model="x", prompt=PROMPT, max_tokens=12, temperature=0,
                                  stop=[" country", "zzz"])
    assert r.choices[0].text == " the capital of the"
    assert r.choices[0].finish_reason == "stop"


def test_logprobs(client):
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=3, temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) >= 1
    for lp in content:
        assert lp.logprob <= 0 and len(lp.top_logprobs) == 2
        assert lp.top_logprobs[0].logprob >= lp.logprob - 1e-4


def test_errors_are_openai_shaped(client, server):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                       temperature=5)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="m", prompt="word " * 3000, max_tokens=2)
    assert "2048" in e.value.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    r = httpx.post(server.base + "/v1/chat/completions", content=b"{not json", timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_models(client):
    models = client.models.list().data
    assert len(models) == 1
    assert client.models.retrieve(models[0].id).id == models[0].id


def test_concurrent_equals_alone(client):
    """At temperature 0 each output is the same alone, beside 7 others, and on a cache hit."""
    preamble = "Here is a list of short facts about astronomy, one per line, each one true. "
    prompts = [f"{preamble * 2}Fact {i}: the largest planet in the solar system is" for i in range(8)]

    def one(p):
        return client.completions.create(model="x", prompt=p, max_tokens=6, temperature=0)

    alone = [one(p).choices[0].text for p in prompts]
    with cf.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(one, prompts))
    assert [r.choices[0].text for r in together] == alone
    assert all(r.usage.prompt_tokens_details is None or r.usage.prompt_tokens_details.cached_tokens > 0
               for r in together)  # the second time, each prompt hits the cache


def test_multiturn_hits_prefix_cache(client):
    system = "You are a helpful assistant who answers in one short sentence. " * 8
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "What is 2+2?"}]
    r1 = client.chat.completions.create(model="m", messages=msgs, max_tokens=5, temperature=0)
    msgs += [{"role": "assistant", "content": r1.choices[0].message.content},
             {"role": "user", "content": "And 3+3?"}]
    r2 = client.chat.completions.create(model="m", messages=msgs, max_tokens=5, temperature=0)
    assert r2.usage.prompt_tokens_details.cached_tokens >= r1.usage.prompt_tokens - 5


def test_client_disconnect_frees_slot(server):
    with httpx.Client(timeout=60) as h:
        with h.stream("POST", server.base + "/v1/completions", json={
                "model": "x", "prompt": "Once upon a time", "max_tokens": 400,
                "stream": True}) as resp:
            for i, _ in enumerate(resp.iter_lines()):
                if i > 3:
                    break
    # The aborted sequence is gone within a step: a short request still completes at once.
    r = httpx.post(server.base + "/v1/completions", timeout=60,
                   json={"model": "x", "prompt": PROMPT, "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200
