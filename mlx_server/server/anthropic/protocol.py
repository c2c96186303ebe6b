"""Request and response bodies of Anthropic's Messages API (`POST /v1/messages`).

Fields follow the order of Anthropic's API reference. Unlike the OpenAI models, unknown
top-level fields are accepted (and logged once as ignored): Claude Code sends beta fields
(`context_management`, `container`, ...) that come and go with its releases, and a 400 for
one would break the agent. Content blocks are one lenient model; `convert.py` checks the
fields each block type needs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlx_server.server.protocol import omitted_if_none


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


# ---------------------------------------------------------------- requests


class Source(_Lenient):
    """Where an image's (or document's) data is: base64, url, file, text..."""

    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ContentBlockParam(_Lenient):
    """Any content block a client sends: text, image, tool_use, tool_result, thinking..."""

    type: str
    text: str | None = None
    source: Source | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[ContentBlockParam] | None = None
    is_error: bool | None = None
    thinking: str | None = None
    signature: str | None = None


class MessageParam(_Lenient):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlockParam]


class ToolParam(_Lenient):
    """A client tool (`type` absent or "custom"), or one of Anthropic's server tools
    (`web_search_20250305`, `bash_20250124`, ...), which this server ignores."""

    name: str
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(_Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(_Lenient):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(default=None, ge=0)


class OutputConfig(_Lenient):
    effort: str | None = None
    format: dict[str, Any] | None = None  # {"type": "json_schema", "schema": {...}}


class _Request(_Lenient):
    model: str
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[ContentBlockParam] | None = None
    thinking: ThinkingConfig | None = None
    tool_choice: ToolChoice | None = None
    tools: list[ToolParam] | None = None
    output_config: OutputConfig | None = None


class MessagesRequest(_Request):
    """POST /v1/messages."""

    max_tokens: int = Field(ge=1)
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)


class CountTokensRequest(_Request):
    """POST /v1/messages/count_tokens."""


# ---------------------------------------------------------------- responses


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingBlock(BaseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""  # nothing to verify here; clients send it back untouched


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = TextBlock | ThinkingBlock | ToolUseBlock
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class Usage(BaseModel):
    """As Anthropic counts: `input_tokens` are the prompt tokens not read from the cache,
    so the whole prompt is input + cache_creation + cache_read."""

    input_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int


class Message(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[ContentBlock]
    model: str
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: Usage


class TokenCount(BaseModel):
    input_tokens: int


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    type: Literal["error"] = "error"
    error: ErrorDetail
    request_id: str | None = omitted_if_none()
