"""Schemathesis fuzzes every operation of the server's own OpenAPI document, in-process,
against the real engine on the tiny random-weight model: valid and invalid bodies,
parameters and paths must never give a 500, and every answer must match the declared
status, content type and schema (errors in the endpoint's own shape).

Phases: the document's request examples, the coverage phase's deterministic boundary and
type-violation cases (~300-650 per POST operation), then MAX_EXAMPLES random cases per
operation, positive and negative; ~9,000 requests in all, 40-90 s on two shared cores.
Generated requests ask for at most MAX_TOKENS tokens, so no case decodes long."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from mlx_server.config import AppConfig
from mlx_server.engine.types import EmbeddingClient, EngineClient
from mlx_server.server import create_app
from mlx_server.server.openapi import undeclared

MAX_EXAMPLES = 30
MAX_TOKENS = 4
# The names each generating operation gives the output cap: the first is set when missing,
# all are clamped.
_CHAT_CAPS = ("max_tokens", "max_completion_tokens")
TOKEN_CAPS = {"/v1/chat/completions": _CHAT_CAPS, "/chat/completions": _CHAT_CAPS,
              "/v1/completions": ("max_tokens",), "/completions": ("max_tokens",),
              "/v1/messages": ("max_tokens",), "/v1/responses": ("max_output_tokens",)}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]


# The document does not depend on the engine, so the schema loads at collection (one test
# item per operation); the app reaches the module's engines through providers.
_SERVED: dict[str, Any] = {}
APP = create_app(lambda: _SERVED.get("engine"), AppConfig(),
                 embeddings=lambda: _SERVED.get("embedder"))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=MAX_EXAMPLES)


@pytest.fixture(scope="module", autouse=True)
def _serve_tiny(tiny_engine: EngineClient, tiny_embedder: EmbeddingClient) -> Iterator[None]:
    _SERVED.update(engine=tiny_engine, embedder=tiny_embedder)
    yield
    _SERVED.clear()


def _cap_tokens(case: Any) -> None:
    """Clamp the output length of generated requests (random-weight models rarely stop);
    a cap missing from a valid request is set, one missing from an invalid request is
    left missing, in case its absence is what makes the request invalid."""
    keys, body = TOKEN_CAPS.get(case.operation.path), case.body
    if not isinstance(body, dict) or keys is None:
        return
    positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
    for key in keys:
        value = body.get(key)
        if (positive and value is None and key == keys[0]) or _int_over(value, MAX_TOKENS):
            body[key] = MAX_TOKENS
    if positive and _int_over(body.get("n"), 2):
        body["n"] = 2  # the n copies decode together; two cover batching


def _int_over(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > limit


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(HealthCheck),
                     max_examples=MAX_EXAMPLES, derandomize=True, database=None)
def test_no_server_errors_and_responses_match_the_document(case: Any) -> None:
    _cap_tokens(case)
    case.call_and_validate(checks=CHECKS)


def test_every_operation_is_declared(app: FastAPI = APP) -> None:
    assert list(undeclared(app)) == []


def test_every_post_declares_its_body_and_errors(app: FastAPI = APP) -> None:
    doc = app.openapi()
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            statuses = set(op["responses"])
            assert "422" not in statuses, (method, path)  # validation errors are 400s here
            if method != "post":
                continue
            assert "$ref" in op["requestBody"]["content"]["application/json"]["schema"], path
            assert {"200", "400", "401", "413", "503"} <= statuses, (path, statuses)
            shape = op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
            expected = "ErrorBody" if path.startswith("/v1/messages") else "ErrorResponse"
            assert shape.endswith("/" + expected), (path, shape)


def test_the_document_is_built_once(app: FastAPI = APP) -> None:
    t0 = time.perf_counter()
    first = app.openapi()
    assert app.openapi() is first and time.perf_counter() - t0 < 5
