"""POST /v1/chat/completions through the app in-process."""

from __future__ import annotations

import openai.types.chat as oai

from .conftest import CHAT, USER_HI, assert_schema, sse_payloads
from .fake_engine import SCRIPT, FakeEngine


async def test_basic_response_shape(client, engine):
    r = await client.post(CHAT, json={"model": "anything", "messages": USER_HI, "max_tokens": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_schema("CreateChatCompletionResponse", body)
    oai.ChatCompletion.model_validate(body)
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "fake-model"  # the served id, whatever the client asked for
    assert body["system_fingerprint"].startswith("fp_")
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"] == {"content": "the quick brown", "refusal": None,
                                 "role": "assistant"}
    assert choice["finish_reason"] == "length"
    assert choice["logprobs"] is None
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["prompt_tokens"] == len(engine.requests[0].prompt_tokens)
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 3
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert "completion_tokens_details" in body["usage"]


async def test_natural_stop_and_default_max_tokens(client, engine):
    r = await client.post(CHAT, json={"messages": USER_HI})
    body = r.json()
    assert body["choices"][0]["message"]["content"] == " ".join(SCRIPT)
    assert body["choices"][0]["finish_reason"] == "stop"
    req = engine.requests[0]
    # No limit given: all the room left in the context.
    assert req.sampling.max_tokens == engine.ctx_size - len(req.prompt_tokens)


async def test_max_completion_tokens_wins(client, engine):
    await client.post(CHAT, json={"messages": USER_HI, "max_tokens": 7,
                                  "max_completion_tokens": 2})
    assert engine.requests[0].sampling.max_tokens == 2


async def test_max_tokens_clamped_to_context(client, engine):
    await client.post(CHAT, json={"messages": USER_HI, "max_tokens": 100_000})
    req = engine.requests[0]
    assert req.sampling.max_tokens == engine.ctx_size - len(req.prompt_tokens)


async def test_stop_string_and_list(client):
    r = await client.post(CHAT, json={"messages": USER_HI, "stop": "fox"})
    assert r.json()["choices"][0]["message"]["content"] == "the quick brown "
    assert r.json()["choices"][0]["finish_reason"] == "stop"
    r = await client.post(CHAT, json={"messages": USER_HI, "stop": ["zzz", "jumps", ""]})
    assert r.json()["choices"][0]["message"]["content"] == "the quick brown fox "


async def test_sampling_params_mapping(client, engine):
    await client.post(CHAT, json={
        "messages": USER_HI, "temperature": 0.3, "top_p": 0.9, "top_k": 20, "min_p": 0.05,
        "repeat_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "logit_bias": {"7": -100, "3": 2.5}, "seed": 42, "ignore_eos": True, "max_tokens": 3,
        "cache_prompt": True, "user": "u", "store": False, "metadata": {"a": "b"},
        "service_tier": "auto", "parallel_tool_calls": True,
    })
    sp = engine.requests[0].sampling
    assert (sp.temperature, sp.top_p, sp.top_k, sp.min_p) == (0.3, 0.9, 20, 0.05)
    assert (sp.repetition_penalty, sp.presence_penalty, sp.frequency_penalty) == (1.1, 0.5, -0.5)
    assert sp.logit_bias == {7: -100.0, 3: 2.5}
    assert sp.seed == 42 and sp.ignore_eos and not sp.logprobs


async def test_negative_top_k_means_off(client, engine):
    await client.post(CHAT, json={"messages": USER_HI, "top_k": -1, "max_tokens": 1})
    assert engine.requests[0].sampling.top_k == 0


async def test_n_runs_concurrent_choices_with_distinct_seeds(client, engine):
    r = await client.post(CHAT, json={"messages": USER_HI, "n": 3, "seed": 5, "max_tokens": 2})
    body = r.json()
    assert_schema("CreateChatCompletionResponse", body)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert sorted(req.sampling.seed for req in engine.requests) == [5, 6, 7]
    texts = [c["message"]["content"] for c in body["choices"]]
    assert len(set(texts)) == 3  # the fake starts the script at seed % len
    assert body["usage"]["completion_tokens"] == 6
    # The prompt is billed once, as OpenAI does for n > 1.
    assert body["usage"]["prompt_tokens"] == len(engine.requests[0].prompt_tokens)
    assert len({req.request_id for req in engine.requests}) == 3


async def test_cached_tokens_reported(client, engine):
    await client.post(CHAT, json={"messages": USER_HI, "max_tokens": 1})
    r = await client.post(CHAT, json={"messages": USER_HI, "max_tokens": 1})
    prompt_len = len(engine.requests[1].prompt_tokens)
    assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == prompt_len - 1


async def test_logprobs_format(client):
    r = await client.post(CHAT, json={"messages": USER_HI, "max_tokens": 2, "logprobs": True,
                                      "top_logprobs": 3})
    body = r.json()
    assert_schema("CreateChatCompletionResponse", body)
    lp = body["choices"][0]["logprobs"]
    assert lp["refusal"] is None
    first, second = lp["content"]
    assert first["token"] == "the" and first["bytes"] == list(b"the")
    assert first["logprob"] == -0.25
    assert len(first["top_logprobs"]) == 3
    assert first["top_logprobs"][0] == {"token": "the", "logprob": -0.25, "bytes": list(b"the")}
    assert second["token"] == " quick"


async def test_logprobs_without_top(client, engine):
    r = await client.post(CHAT, json={"messages": USER_HI, "max_tokens": 1, "logprobs": True})
    assert r.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"] == []
    assert engine.requests[0].sampling.logprobs


async def test_stream_chunks(client):
    r = await client.post(CHAT, json={"messages": USER_HI, "max_tokens": 3, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks = sse_payloads(r.text)
    for chunk in chunks:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
        oai.ChatCompletionChunk.model_validate(chunk)
        assert "usage" not in chunk
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "the quick brown"
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"][0]["delta"] == {}


async def test_stream_equals_non_stream(client):
    common = {"messages": USER_HI, "stop": ["lazy"], "n": 2, "seed": 1}
    full = (await client.post(CHAT, json=common)).json()
    streamed = sse_payloads((await client.post(CHAT, json={**common, "stream": True})).text)
    for i in range(2):
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in streamed
                       if c["choices"] and c["choices"][0]["index"] == i)
        assert text == full["choices"][i]["message"]["content"]


async def test_stream_include_usage(client):
    r = await client.post(CHAT, json={"messages": USER_HI, "max_tokens": 2, "n": 2,
                                      "stream": True, "stream_options": {"include_usage": True}})
    chunks = sse_payloads(r.text)
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 4
    assert last["usage"]["prompt_tokens_details"]["cached_tokens"] >= 0
    assert_schema("CreateChatCompletionStreamResponse", last)
    assert all("usage" not in c for c in chunks[:-1])


async def test_stream_logprobs(client):
    r = await client.post(CHAT, json={"messages": USER_HI, "max_tokens": 2, "stream": True,
                                      "logprobs": True, "top_logprobs": 1})
    chunks = sse_payloads(r.text)
    tokens = [c["choices"][0]["logprobs"]["content"][0]["token"] for c in chunks
              if c["choices"][0]["logprobs"]]
    assert tokens == ["the", " quick"]
    for c in chunks:
        assert_schema("CreateChatCompletionStreamResponse", c)


async def test_messages_normalized_for_the_template(client, engine):
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
         "name": "bob"},
        {"role": "assistant", "content": None, "reasoning_content": "hmm", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]
    r = await client.post(CHAT, json={"messages": messages, "max_tokens": 1,
                                      "chat_template_kwargs": {"enable_thinking": False},
                                      "reasoning_effort": "low"})
    assert r.status_code == 200, r.text
    render = engine.renders[0]
    assert render["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "a\nb", "name": "bob"},
        {"role": "assistant", "content": "", "reasoning_content": "hmm", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": {"x": 1}}}]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]
    assert render["template_kwargs"] == {"enable_thinking": False, "reasoning_effort": "low"}


async def test_tools_reach_the_template_with_auto(client, engine):
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    await client.post(CHAT, json={"messages": USER_HI, "tools": [tool], "max_tokens": 1})
    await client.post(CHAT, json={"messages": USER_HI, "tools": [tool], "tool_choice": "auto",
                                  "max_tokens": 1})
    await client.post(CHAT, json={"messages": USER_HI, "tools": [tool], "tool_choice": "none",
                                  "max_tokens": 1})
    assert engine.renders[0]["tools"][0]["function"]["name"] == "get_weather"
    assert engine.renders[1]["tools"] == engine.renders[0]["tools"]
    assert engine.renders[2]["tools"] is None


async def test_text_response_format_is_accepted(client):
    r = await client.post(CHAT, json={"messages": USER_HI, "max_tokens": 1,
                                      "response_format": {"type": "text"}})
    assert r.status_code == 200


async def test_chat_alias_route(client):
    r = await client.post("/chat/completions", json={"messages": USER_HI, "max_tokens": 1})
    assert r.status_code == 200


async def test_curl_form_content_type_still_parses(client):
    r = await client.post(CHAT, content=b'{"messages":[{"role":"user","content":"x"}]}',
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200


async def test_all_sequences_finish_cleanly(client, engine: FakeEngine):
    await client.post(CHAT, json={"messages": USER_HI, "n": 2, "max_tokens": 2})
    await client.post(CHAT, json={"messages": USER_HI, "n": 2, "max_tokens": 2, "stream": True})
    assert len(engine.finished) == 4 and not engine.aborted
