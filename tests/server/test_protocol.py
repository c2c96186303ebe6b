"""The request models accept everything the official SDK can send, and nothing else."""

from __future__ import annotations

import inspect

import pytest
from openai.resources.chat.completions import Completions as ChatCompletions
from openai.resources.completions import Completions

from mlx_server.server.protocol import ChatCompletionRequest, CompletionRequest

_SDK_ONLY = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}


@pytest.mark.parametrize("sdk_method, model", [
    (ChatCompletions.create, ChatCompletionRequest),
    (Completions.create, CompletionRequest),
])
def test_every_sdk_parameter_is_a_field(sdk_method, model):
    sent = set(inspect.signature(sdk_method).parameters) - _SDK_ONLY
    assert sent - set(model.model_fields) == set()


def test_fields_follow_openais_order():
    """OpenAI's reference lists messages/model first, then the rest alphabetically."""
    fields = list(ChatCompletionRequest.model_fields)
    openai_fields = fields[:fields.index("web_search_options") + 1]
    assert openai_fields[:2] == ["messages", "model"]
    assert openai_fields[2:] == sorted(openai_fields[2:])


def test_explicit_nulls_are_accepted():
    body = {"messages": [{"role": "user", "content": "x"}], "temperature": None, "n": None,
            "stop": None, "max_tokens": None, "logprobs": None, "tools": None, "seed": None}
    req = ChatCompletionRequest.model_validate(body, strict=True)
    assert req.temperature is None and req.n is None


def test_nested_extras_are_kept():
    body = {"messages": [{"role": "assistant", "content": "x", "reasoning_content": "y"}]}
    req = ChatCompletionRequest.model_validate(body, strict=True)
    assert req.messages[0].model_extra == {"reasoning_content": "y"}
