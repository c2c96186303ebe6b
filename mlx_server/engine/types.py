"""The vocabulary shared by the engine and whoever drives it (the HTTP layer, tests, benches).

Everything here is plain data: no mlx, no HTTP. The HTTP layer builds a
`GenerationRequest`, hands it to an `EngineClient`, and reads `GenerationOutput`s back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

FinishReason = Literal["stop", "length", "abort", "error", "timeout"]


@dataclass(frozen=True)
class Grammar:
    """A constraint on the generated text, enforced token by token (engine/constrained.py).

    kind "json_schema": `source` is a JSON schema (a dict). kind "lark": `source` is a
    grammar in llguidance's Lark dialect, which embeds JSON schemas as `%json{...}`.
    """

    kind: Literal["json_schema", "lark"]
    source: Any


@dataclass(frozen=True)
class ThoughtControl:
    """Where a model's thought starts and ends, as token ids.

    The engine keeps grammars out of the thought and, with `budget`, forces `end_ids`
    after that many thinking tokens. `prefilled`: the prompt already opened the thought.
    """

    start_ids: tuple[int, ...]
    end_ids: tuple[int, ...]
    prefilled: bool = False
    budget: int | None = None


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. Defaults are OpenAI's."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    grammar: Grammar | None = None
    thought: ThoughtControl | None = None

    def replace(self, **changes: Any) -> SamplingParams:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class GenerationRequest:
    """One sequence to generate. `prompt_tokens` is already templated and tokenized."""

    request_id: str
    prompt_tokens: Sequence[int]
    sampling: SamplingParams = SamplingParams()
    timeout_s: float | None = None
    # Images in the prompt (vision models): where their tokens sit, prepared by `attach_images`.
    images: tuple[PromptImage, ...] = ()


@dataclass(frozen=True)
class PromptImage:
    """One image's run of tokens in a prompt: `length` tokens from `start`, standing for the
    image with SHA-256 `digest`; `pixels` is the model's preprocessed input (a numpy array)."""

    start: int
    length: int
    digest: str
    pixels: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class TokenLogprob:
    """Log-probability of one chosen token and its top alternatives."""

    token_id: int
    token: str
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()


@dataclass(frozen=True)
class GenerationOutput:
    """One increment of a sequence: new text since the last output, and bookkeeping.

    `text` never contains a stop string; text that might become one is held back
    until it is clear. The last output of a stream has `finish_reason` set.
    """

    request_id: str
    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    # Seconds: queue wait, prompt processing, and time since the first token.
    queue_s: float = 0.0
    prompt_s: float = 0.0
    decode_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What the engine serves; read by /v1/models, /props and the like."""

    id: str
    path: str
    ctx_size: int
    vocab_size: int
    chat_template: str | None
    created: int
    max_slots: int
    dtype: str = ""
    device: str = ""
    vision: bool = False  # accepts images (`EngineClient.attach_images`)


@dataclass(frozen=True)
class Health:
    """`ok` is False while loading, after the loop has died, or when it stopped making progress."""

    ok: bool
    status: Literal["loading", "ok", "wedged", "error"]
    detail: str = ""


@dataclass(frozen=True)
class SlotInfo:
    """One decoding slot, as /slots shows it: idle (`request_id` None) or running a sequence."""

    id: int
    request_id: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the prefix cache
    generated_tokens: int = 0
    max_tokens: int = 0

    @property
    def is_processing(self) -> bool:
        return self.request_id is not None


class EngineError(Exception):
    """Base for errors the engine reports to callers (the HTTP layer maps them to statuses)."""


class PromptTooLongError(EngineError):
    """The prompt (plus room for one new token) does not fit the context."""

    def __init__(self, prompt_tokens: int, ctx_size: int):
        self.prompt_tokens = prompt_tokens
        self.ctx_size = ctx_size
        super().__init__(
            f"The prompt has {prompt_tokens} tokens but the context holds {ctx_size}; "
            "shorten the prompt or raise --ctx-size."
        )


class QueueFullError(EngineError):
    """The waiting queue is full; the caller should retry later."""

    def __init__(self, retry_after_s: int = 1):
        self.retry_after_s = retry_after_s
        super().__init__("The server is at capacity: the waiting queue is full. Retry later.")


class CapacityError(EngineError):
    """The request can never fit the KV-cache budget, however long it waits."""


class InvalidRequestError(EngineError):
    """A request the engine cannot serve as asked (e.g. a logit_bias token outside the vocabulary)."""

    def __init__(self, message: str, param: str | None = None):
        self.param = param
        super().__init__(message)


class ModelLoadError(EngineError):
    """The model could not be loaded; the message is meant for the user, no traceback needed."""


class TemplateError(EngineError):
    """The chat template could not render the given messages."""


class EngineClient(Protocol):
    """The one interface the HTTP layer uses to reach an engine."""

    @property
    def model_info(self) -> ModelInfo: ...

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        template_kwargs: dict[str, Any] | None = None,
        add_generation_prompt: bool = True,
    ) -> list[int]: ...

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def attach_images(self, prompt_tokens: Sequence[int], images: Sequence[tuple[bytes, str]]
                      ) -> tuple[list[int], tuple[PromptImage, ...]]:
        """Vision models only (`model_info.vision`): expand the image placeholders the chat
        template emitted into image tokens. `images` are (bytes, sha256) in message order."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]: ...

    async def abort(self, request_id: str) -> None: ...

    def health(self) -> Health: ...

    def stats(self) -> dict[str, Any]: ...

    def slots(self) -> list[SlotInfo]:
        """Every slot, idle ones included, in id order."""
        ...


# ---------------------------------------------------------------- embeddings


@dataclass(frozen=True)
class EmbeddingModelInfo:
    """What an embedding model serves; read by /v1/embeddings and /v1/models."""

    id: str
    path: str
    created: int
    dim: int
    max_length: int  # tokens per input, special tokens included
    vocab_size: int
    pooling: str
    # Sizes a Matryoshka model may be cut to: None (not one) only `dim`, () any size.
    matryoshka_dims: tuple[int, ...] | None = None
    dtype: str = ""

    def allows_dimensions(self, n: int) -> bool:
        if n == self.dim:
            return True
        if self.matryoshka_dims is None:
            return False
        return n in self.matryoshka_dims if self.matryoshka_dims else 0 < n < self.dim


@dataclass(frozen=True)
class EmbeddingRequest:
    """Token sequences to embed, each already within `max_length`; one vector comes back
    per sequence, cut to `dimensions` and renormalized when that is set."""

    request_id: str
    inputs: tuple[tuple[int, ...], ...]
    dimensions: int | None = None


class EmbeddingClient(Protocol):
    """What the HTTP layer uses to reach an embedding model."""

    @property
    def embedding_info(self) -> EmbeddingModelInfo: ...

    def tokenize(self, texts: Sequence[str], truncate: bool = False) -> list[list[int]]: ...

    async def embed(self, request: EmbeddingRequest) -> Sequence[Sequence[float]]:
        """Unit-length float32 rows (a numpy array), one per input."""
        ...

    def health(self) -> Health: ...

    def stats(self) -> dict[str, Any]: ...
