"""Request and response bodies of the OpenAI-compatible API, all in one place.

Fields follow the order of OpenAI's API reference. Requests are parsed strictly (JSON
types as documented, unknown top-level fields rejected) so mistakes surface as 400s
instead of being silently ignored. Every documented OpenAI field is declared, even
the ones we ignore, so the official SDKs never trip the unknown-field check.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator


def _omit_if_none(value: Any) -> bool:
    return value is None


def omitted_if_none(**kwargs: Any) -> Any:
    """A field left out of the JSON when None (OpenAI omits some fields rather than nulling)."""
    return Field(default=None, exclude_if=_omit_if_none, **kwargs)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Lenient(BaseModel):
    """Nested request objects: clients attach extra keys here (e.g. `reasoning_content`)."""

    model_config = ConfigDict(extra="allow", strict=True)


# ---------------------------------------------------------------- chat requests


class ImageURL(_Lenient):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(_Lenient):
    """One part of a message's content array: text, or an image for vision models."""

    type: Literal["text", "image_url", "input_audio", "file", "refusal"]
    text: str | None = None
    image_url: ImageURL | None = None
    refusal: str | None = None


class FunctionCall(_Lenient):
    name: str
    # OpenAI sends a JSON string; some clients send the object itself.
    arguments: str | dict[str, Any] = ""


class ToolCall(_Lenient):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Lenient):
    """A message of any role; role-specific checks happen when it is normalized."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(_Lenient):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Lenient):
    type: Literal["function", "custom"]
    function: FunctionDefinition | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class StreamOptions(_Lenient):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


LogitBias = dict[str, float]


def _check_logit_bias(value: LogitBias | None) -> LogitBias | None:
    for key, bias in (value or {}).items():
        if not key.lstrip("-").isdigit() or int(key) < 0:
            raise ValueError(f"keys must be token ids, got {key!r}")
        if not -100 <= bias <= 100:
            raise ValueError(f"biases must be between -100 and 100, got {bias} for {key}")
    return value


class ChatCompletionRequest(_Request):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None  # llama-server clients often omit it; we serve one model anyway
    audio: dict[str, Any] | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    function_call: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    logit_bias: LogitBias | None = None
    logprobs: bool | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    metadata: dict[str, Any] | None = None
    modalities: list[str] | None = None
    moderation: Any = None
    n: int | None = Field(default=None, ge=1, le=128)
    parallel_tool_calls: bool | None = None
    prediction: dict[str, Any] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    prompt_cache_key: str | None = None
    prompt_cache_options: Any = None
    prompt_cache_retention: str | None = None
    reasoning_effort: str | None = None
    response_format: ResponseFormat | None = None
    safety_identifier: str | None = None
    seed: int | None = None
    service_tier: str | None = None
    stop: str | list[str] | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    tool_choice: str | dict[str, Any] | None = None
    tools: list[Tool] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    top_p: float | None = Field(default=None, ge=0, le=1)
    user: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    # llama-server extras.
    top_k: int | None = None
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("repetition_penalty", "repeat_penalty")
    )
    cache_prompt: bool | None = None
    ignore_eos: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    check_logit_bias = field_validator("logit_bias")(_check_logit_bias)


# ---------------------------------------------------------------- completions requests


class CompletionRequest(_Request):
    """POST /v1/completions (the legacy text endpoint)."""

    model: str | None = None
    prompt: str | list[str] | list[int] | list[list[int]]
    best_of: int | None = Field(default=None, ge=1, le=20)
    echo: bool | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: LogitBias | None = None
    logprobs: int | None = Field(default=None, ge=0, le=20)
    max_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=128)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    user: str | None = None
    # llama-server extras.
    top_k: int | None = None
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("repetition_penalty", "repeat_penalty")
    )
    cache_prompt: bool | None = None
    ignore_eos: bool | None = None

    check_logit_bias = field_validator("logit_bias")(_check_logit_bias)


# ---------------------------------------------------------------- shared responses


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    completion_tokens: int
    prompt_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails = CompletionTokensDetails()
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()


class Timings(BaseModel):
    """llama-server's per-response timings: cached and processed prompt tokens, then the
    generated ones, with their times in milliseconds."""

    cache_n: int
    prompt_n: int
    prompt_ms: float
    prompt_per_token_ms: float
    prompt_per_second: float
    predicted_n: int
    predicted_ms: float
    predicted_per_token_ms: float
    predicted_per_second: float


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobEntry(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprobEntry] | None
    refusal: list[TokenLogprobEntry] | None = None


# ---------------------------------------------------------------- chat responses

ChatFinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class ResponseFunction(BaseModel):
    name: str
    arguments: str  # JSON text of an object


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunction


class ResponseMessage(BaseModel):
    content: str | None
    refusal: str | None = None
    role: Literal["assistant"] = "assistant"
    tool_calls: list[ResponseToolCall] | None = omitted_if_none()
    # Not OpenAI's: the model's thought (DeepSeek's name), and its copy under `reasoning`
    # for clients that read that name (`--mirror-reasoning-field`).
    reasoning_content: str | None = omitted_if_none()
    reasoning: str | None = omitted_if_none()


class ChatChoice(BaseModel):
    finish_reason: ChatFinishReason
    index: int
    logprobs: ChatLogprobs | None = None
    message: ResponseMessage


class ChatCompletionResponse(BaseModel):
    id: str
    choices: list[ChatChoice]
    created: int
    model: str
    object: Literal["chat.completion"] = "chat.completion"
    system_fingerprint: str
    usage: Usage
    timings: Timings | None = omitted_if_none()  # llama-server's


class DeltaFunction(BaseModel):
    name: str | None = omitted_if_none()
    arguments: str = ""


class DeltaToolCall(BaseModel):
    """The first delta of a call carries id, type and name; later ones argument text."""

    index: int
    id: str | None = omitted_if_none()
    type: Literal["function"] | None = omitted_if_none()
    function: DeltaFunction


class ChatDelta(BaseModel):
    content: str | None = omitted_if_none()
    role: Literal["assistant"] | None = omitted_if_none()
    tool_calls: list[DeltaToolCall] | None = omitted_if_none()
    reasoning_content: str | None = omitted_if_none()
    reasoning: str | None = omitted_if_none()


class ChatChunkChoice(BaseModel):
    delta: ChatDelta
    finish_reason: ChatFinishReason | None = None
    index: int
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    choices: list[ChatChunkChoice]
    created: int
    model: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    system_fingerprint: str
    usage: Usage | None = omitted_if_none()
    timings: Timings | None = omitted_if_none()  # llama-server's, on the last chunk


# ---------------------------------------------------------------- completions responses


class CompletionLogprobs(BaseModel):
    text_offset: list[int]
    token_logprobs: list[float]
    tokens: list[str]
    top_logprobs: list[dict[str, float]]


class CompletionChoice(BaseModel):
    # None only in stream chunks before the last one, as OpenAI sends it.
    finish_reason: Literal["stop", "length", "content_filter"] | None
    index: int
    logprobs: CompletionLogprobs | None = None
    text: str


class CompletionResponse(BaseModel):
    """Both the whole response and each stream chunk (they share a shape)."""

    id: str
    choices: list[CompletionChoice]
    created: int
    model: str
    object: Literal["text_completion"] = "text_completion"
    system_fingerprint: str
    usage: Usage | None = omitted_if_none()
    timings: Timings | None = omitted_if_none()  # llama-server's, on the last chunk


# ---------------------------------------------------------------- embeddings


class EmbeddingRequest(_Request):
    """POST /v1/embeddings."""

    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = None
    # Extension (text-embeddings-inference's name): cut over-long inputs instead of a 400.
    truncate: bool | None = None


class Embedding(BaseModel):
    embedding: list[float] | str  # base64 of little-endian float32 with encoding_format=base64
    index: int
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    data: list[Embedding]
    model: str
    object: Literal["list"] = "list"
    usage: EmbeddingUsage


# ---------------------------------------------------------------- models and errors


class Model(BaseModel):
    id: str
    created: int
    object: Literal["model"] = "model"
    owned_by: str = "mlx-server"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# ---------------------------------------------------------------- llama-server endpoints


class TokenizeRequest(_Request):
    """POST /tokenize."""

    content: str
    add_special: bool = False
    parse_special: bool = True  # accepted; special-token text is always parsed
    with_pieces: bool = False


class TokenPiece(BaseModel):
    id: int
    piece: str | list[int]  # the bytes when they are not valid UTF-8 on their own


class TokenizeResponse(BaseModel):
    tokens: list[int] | list[TokenPiece]


class DetokenizeRequest(_Request):
    """POST /detokenize."""

    tokens: list[int]


class DetokenizeResponse(BaseModel):
    content: str
