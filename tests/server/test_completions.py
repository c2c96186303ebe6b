"""POST /v1/completions through the app in-process."""

from __future__ import annotations

import openai.types as oai
import pytest

from .conftest import COMPLETIONS, schema_errors, sse_payloads
from .fake_engine import SCRIPT


def assert_completion_schema(body: dict, streamed: bool = False) -> None:
    errors = schema_errors("CreateCompletionResponse", body)
    if streamed:
        # OpenAI streams `finish_reason: null` until the last chunk, though its spec (which
        # shares one shape for both) does not allow it; that is the only deviation allowed.
        errors = [e for e in errors
                  if not (e.instance is None and list(e.absolute_path)[-1:] == ["finish_reason"])]
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    if not streamed:  # the SDK's type has the same strictness; it does not validate streams
        oai.Completion.model_validate(body)


async def test_string_prompt(client, engine):
    r = await client.post(COMPLETIONS, json={"model": "x", "prompt": "once upon a time",
                                             "max_tokens": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_completion_schema(body)
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert body["model"] == "fake-model"
    assert body["choices"] == [{"finish_reason": "length", "index": 0, "logprobs": None,
                                "text": "the quick"}]
    assert body["usage"]["prompt_tokens"] == 4
    assert engine.requests[0].prompt_tokens == engine.encode("once upon a time")


@pytest.mark.parametrize("prompt, expected", [
    (["a b", "c"], [[1, 2], [3]]),
    ([5, 6, 7], [[5, 6, 7]]),
    ([[5, 6], [7]], [[5, 6], [7]]),
])
async def test_prompt_forms(client, engine, prompt, expected):
    engine.encode("a b c")  # fix the ids of a, b, c to 1, 2, 3
    r = await client.post(COMPLETIONS, json={"prompt": prompt, "max_tokens": 1})
    assert r.status_code == 200, r.text
    assert [list(req.prompt_tokens) for req in engine.requests] == expected
    assert len(r.json()["choices"]) == len(expected)


async def test_multiple_prompts_times_n_are_prompt_major(client, engine):
    r = await client.post(COMPLETIONS, json={"prompt": ["a", "b c"], "n": 2, "seed": 0,
                                             "max_tokens": 1})
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    prompts = [list(req.prompt_tokens) for req in engine.requests]
    by_id = {req.request_id: list(req.prompt_tokens) for req in engine.requests}
    assert sorted(prompts) == sorted([[1], [1], [2, 3], [2, 3]])
    ids = sorted(by_id)
    assert [by_id[i] for i in ids] == [[1], [1], [2, 3], [2, 3]]
    # Two prompts, each billed once; seeds restart per prompt.
    assert body["usage"]["prompt_tokens"] == 3
    assert [c["text"] for c in body["choices"]] == ["the", "quick", "the", "quick"]


async def test_echo(client):
    r = await client.post(COMPLETIONS, json={"prompt": "hi you", "echo": True, "max_tokens": 1})
    assert r.json()["choices"][0]["text"] == "hi youthe"
    r = await client.post(COMPLETIONS, json={"prompt": "hi you", "echo": True, "max_tokens": 1,
                                             "stream": True})
    chunks = sse_payloads(r.text)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "hi youthe"


async def test_logprobs_format(client):
    r = await client.post(COMPLETIONS, json={"prompt": "x", "max_tokens": 3, "logprobs": 2})
    body = r.json()
    assert_completion_schema(body)
    lp = body["choices"][0]["logprobs"]
    assert lp["tokens"] == ["the", " quick", " brown"]
    assert lp["token_logprobs"] == [-0.25, -0.5, -0.75]
    assert lp["text_offset"] == [0, 3, 9]
    assert lp["top_logprobs"][0] == {"the": -0.25, "alt1": -1.25}


async def test_logprobs_zero_gives_chosen_token_only(client, engine):
    r = await client.post(COMPLETIONS, json={"prompt": "x", "max_tokens": 1, "logprobs": 0})
    lp = r.json()["choices"][0]["logprobs"]
    assert lp["tokens"] == ["the"] and lp["top_logprobs"] == [{}]
    assert engine.requests[0].sampling.logprobs


async def test_stream(client):
    r = await client.post(COMPLETIONS, json={"prompt": "x", "max_tokens": 3, "stream": True,
                                             "logprobs": 1,
                                             "stream_options": {"include_usage": True}})
    chunks = sse_payloads(r.text)
    for c in chunks:
        assert_completion_schema(c, streamed=True)
    text_chunks, usage_chunk = chunks[:-1], chunks[-1]
    assert "".join(c["choices"][0]["text"] for c in text_chunks) == "the quick brown"
    assert [c["choices"][0]["finish_reason"] for c in text_chunks] == [None, None, "length"]
    offsets = [c["choices"][0]["logprobs"]["text_offset"][0] for c in text_chunks]
    assert offsets == [0, 3, 9]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 3


async def test_stop_and_natural_end(client):
    r = await client.post(COMPLETIONS, json={"prompt": "x", "stop": "over"})
    assert r.json()["choices"][0] | {"logprobs": None} == {
        "finish_reason": "stop", "index": 0, "logprobs": None, "text": "the quick brown fox jumps "}
    r = await client.post(COMPLETIONS, json={"prompt": "x"})
    assert r.json()["choices"][0]["text"] == " ".join(SCRIPT)


async def test_completions_alias_route(client):
    r = await client.post("/completions", json={"prompt": "x", "max_tokens": 1})
    assert r.status_code == 200


@pytest.mark.parametrize("extra, param", [
    ({"suffix": "tail"}, "suffix"),
    ({"echo": True, "logprobs": 1}, "echo"),
    ({"best_of": 3}, "best_of"),
])
async def test_unsupported_options(client, extra, param):
    r = await client.post(COMPLETIONS, json={"prompt": "x", **extra})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param
    assert "not supported" in r.json()["error"]["message"]


@pytest.mark.parametrize("prompt", ["", [], [[]], [5, 100000], [[1], [-1]]])
async def test_bad_prompts(client, prompt):
    r = await client.post(COMPLETIONS, json={"prompt": prompt})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "prompt"


async def test_best_of_equal_to_n_is_fine(client):
    r = await client.post(COMPLETIONS, json={"prompt": "x", "best_of": 2, "n": 2,
                                             "max_tokens": 1})
    assert r.status_code == 200
