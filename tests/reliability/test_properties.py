"""Property tests (hypothesis) for the pieces every request goes through:

- request parsing: any JSON either validates or raises a validation error that becomes a
  clean 400 (and the app answers any body, JSON or not, without a 5xx);
- images: a corrupted image or a malformed data URL is an ImageError (a 400), nothing else;
- SSE framing: whatever the payload text, each event parses back to the same JSON, read
  by the spec's line rules or by str.splitlines-style readers (httpx's iter_lines);
- stop strings: feeding text in any split gives what feeding it whole gives, and the
  output never contains a stop string.

Parser split-invariance (tool calls, reasoning) is covered in tests/parsing."""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from server.fake_engine import FakeEngine

from mlx_server.config import AppConfig
from mlx_server.engine.text import StopMatcher
from mlx_server.server import create_app, sse
from mlx_server.server import protocol as p
from mlx_server.server.anthropic import protocol as anthropic
from mlx_server.server.errors import from_validation_errors
from mlx_server.server.openapi import EXAMPLES
from mlx_server.server.responses import protocol as responses
from mlx_server.vision.images import FORMATS, ImageError, ImagePolicy, load_image

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- request parsing

MODELS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": p.ChatCompletionRequest,
    "/v1/completions": p.CompletionRequest,
    "/v1/embeddings": p.EmbeddingRequest,
    "/tokenize": p.TokenizeRequest,
    "/detokenize": p.DetokenizeRequest,
    "/v1/messages": anthropic.MessagesRequest,
    "/v1/messages/count_tokens": anthropic.CountTokensRequest,
    "/v1/responses": responses.ResponsesRequest,
}

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63)
           | st.floats() | st.text(max_size=20))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


def near_valid(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid example with one field (known or not) set to any JSON value, or dropped."""
    examples = [e for e in EXAMPLES[model].values()]
    keys = st.sampled_from(sorted(model.model_fields)) | st.text(max_size=12)

    def mutate(example: dict[str, Any], key: str, value: Any, drop: bool) -> dict[str, Any]:
        body = json.loads(json.dumps(example))
        if drop:
            body.pop(key, None)
        else:
            body[key] = value
        return body

    return st.builds(mutate, st.sampled_from(examples), keys, json_values, st.booleans())


def bodies(model: type[BaseModel]) -> st.SearchStrategy[bytes]:
    as_json = (json_values | near_valid(model)).map(lambda v: json.dumps(v).encode())
    return as_json | st.binary(max_size=64)


def assert_clean_400(exc: ValidationError) -> None:
    error = from_validation_errors(list(exc.errors()))
    assert error.status == 400
    assert error.detail.message and error.detail.type == "invalid_request_error"
    assert error.detail.param is None or re.fullmatch(r"[\w.]+", error.detail.param)


@pytest.mark.parametrize("model", list(MODELS.values()), ids=lambda m: m.__name__)
@SETTINGS
@given(data=st.data())
def test_any_json_validates_or_fails_cleanly(model: type[BaseModel], data: Any) -> None:
    raw = data.draw(bodies(model))
    try:
        model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        assert_clean_400(exc)


@pytest.fixture(scope="module")
def app_client() -> Any:
    with TestClient(create_app(FakeEngine(), AppConfig()), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("path", list(MODELS), ids=list(MODELS))
@settings(SETTINGS, max_examples=60)
@given(data=st.data())
def test_the_app_answers_any_body_without_a_5xx(app_client: Any, path: str, data: Any) -> None:
    raw = data.draw(bodies(MODELS[path]))
    r = app_client.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        body = r.json()
        error = body["error"]
        if path.startswith("/v1/messages"):
            assert body["type"] == "error" and set(error) == {"type", "message"}
        else:
            assert set(error) == {"message", "type", "param", "code"}


# ---------------------------------------------------------------- SSE framing

# Text meant to break framing: line breaks of every kind, "data:" and blank lines.
PIECES = ["a", " ", ":", "data: ", "\n", "\r", "\r\n", "\n\n", "\x00", "\x0b", "\x1c", "\x85",
          "\u2028", "\u2029", "é", "☃", "😀", "[DONE]", '"', "\\"]
tricky = st.lists(st.sampled_from(PIECES), max_size=12).map("".join) | st.text(max_size=30)


def spec_events(stream: bytes) -> list[dict[str, str]]:
    """Events as the SSE spec reads them: lines end at CRLF, LF or CR; a blank line ends
    an event; `data` lines join with LF."""
    events, fields = [], {}
    for line in re.split(r"\r\n|\r|\n", stream.decode()):
        if not line:
            if fields:
                events.append(fields)
            fields = {}
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        fields[name] = fields[name] + "\n" + value if name in fields else value
    return events


def httpx_data_lines(stream: bytes) -> list[str]:
    """What a client reading `response.iter_lines()` sees (str.splitlines' line breaks)."""
    lines = httpx.Response(200, content=stream).iter_lines()
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


@SETTINGS
@given(payloads=st.lists(st.dictionaries(st.sampled_from(["text", "type", "x"]), tricky,
                                         min_size=1), min_size=1, max_size=4))
def test_sse_events_parse_back_to_the_same_json(payloads: list[dict[str, str]]) -> None:
    stream = b"".join(sse.event(payload) for payload in payloads) + sse.DONE
    events = spec_events(stream)
    assert [e["data"] for e in events[-1:]] == ["[DONE]"] and len(events) == len(payloads) + 1
    assert [json.loads(e["data"]) for e in events[:-1]] == payloads
    assert [json.loads(d) for d in httpx_data_lines(stream)[:-1]] == payloads


@SETTINGS
@given(text=tricky, kind=tricky)
def test_sse_model_and_named_events_parse_back(text: str, kind: str) -> None:
    chunk = p.ChatCompletionChunk(id="c", created=1, model="m", system_fingerprint="fp",
                                  choices=[p.ChatChunkChoice(
                                      index=0, delta=p.ChatDelta(content=text))])
    named = sse.named_event({"type": "content_block_delta", "text": kind})
    events = spec_events(sse.event(chunk) + named)
    assert p.ChatCompletionChunk.model_validate_json(events[0]["data"]) == chunk
    assert events[1]["event"] == "content_block_delta"
    assert json.loads(events[1]["data"])["text"] == kind
    first, second = httpx_data_lines(sse.event(chunk) + named)
    assert p.ChatCompletionChunk.model_validate_json(first) == chunk
    assert json.loads(second)["text"] == kind


# ---------------------------------------------------------------- images in requests
# The default model has no vision, so the e2e corpus never decodes an image: these reach
# the decoder directly.


def _encoded(fmt: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 30)).save(out, format=fmt)
    return out.getvalue()


@SETTINGS
@given(fmt=st.sampled_from(sorted(FORMATS)), cut=st.integers(0, 400),
       edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6))
def test_a_corrupted_image_is_an_image_error(fmt: str, cut: int,
                                             edits: list[tuple[int, int]]) -> None:
    data = bytearray(_encoded(fmt))
    for pos, value in edits:
        data[pos % len(data)] = value
    url = "data:image/x;base64," + base64.b64encode(bytes(data[:cut])).decode()
    try:
        image = load_image(url, ImagePolicy())
    except ImageError:
        return
    assert image.format == fmt


@SETTINGS
@given(header=st.sampled_from([
    "data:image/png;base64,", "data:image/png,", "data:text/plain;base64,",
    "data:image/png;base64", "data:", "file:///x", "http://127.0.0.1/x"]),
       payload=st.text(max_size=40) | st.binary(max_size=30).map(
           lambda b: base64.b64encode(b).decode()))
def test_a_malformed_image_url_is_an_image_error(header: str, payload: str) -> None:
    with pytest.raises(ImageError):
        load_image(header + payload, ImagePolicy())


# ---------------------------------------------------------------- stop strings

alphabet = st.sampled_from(["a", "b", "c", "é", "\n"])
small_text = st.text(alphabet=alphabet, max_size=24)
stop_lists = st.lists(st.text(alphabet=alphabet, max_size=4), max_size=3)


def feed_in(stops: list[str], chunks: list[str]) -> tuple[str, bool]:
    matcher, out = StopMatcher(stops), ""
    for chunk in chunks:
        text, hit = matcher.feed(chunk)
        out += text
        if hit:
            return out, True
    text, hit = matcher.flush()
    return out + text, hit


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]


@SETTINGS
@given(text=small_text, stops=stop_lists, cuts=st.lists(st.integers(0, 24), max_size=8))
def test_stop_matching_does_not_depend_on_the_split(text: str, stops: list[str],
                                                    cuts: list[int]) -> None:
    whole = feed_in(stops, [text])
    assert feed_in(stops, split(text, cuts)) == whole
    assert feed_in(stops, list(text)) == whole  # one character at a time


@SETTINGS
@given(text=small_text, stops=stop_lists, cuts=st.lists(st.integers(0, 24), max_size=8))
def test_stop_output_is_the_text_up_to_the_first_stop(text: str, stops: list[str],
                                                      cuts: list[int]) -> None:
    out, hit = feed_in(stops, split(text, cuts))
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    assert (out, hit) == ((text[:min(found)], True) if found else (text, False))
    assert not any(s and s in out for s in stops)
