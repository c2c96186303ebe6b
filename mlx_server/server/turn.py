"""One sequence of a Messages or Responses request, read into blocks (`blocks.py`).

These APIs have no `n`: a request is one sequence, so they need neither `merged`'s
fan-in nor `collect`'s per-choice bookkeeping, only the parsed output and the last output.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mlx_server.engine.types import EngineClient, EngineError, GenerationOutput, GenerationRequest
from mlx_server.server.blocks import Block, BlockAssembler, BlockEvent, message_blocks
from mlx_server.server.chat_output import ChatPlan, ChoiceOutput
from mlx_server.server.errors import from_engine_error
from mlx_server.server.generation import EngineStream, check_finish, finish_reason, open_streams


@dataclass
class Turn:
    """The parsed output of one sequence so far, and its last engine output once done."""

    plan: ChatPlan
    request_id: str
    final: GenerationOutput | None = None
    assembler: BlockAssembler = field(default_factory=BlockAssembler)
    output: ChoiceOutput = field(init=False)

    def __post_init__(self) -> None:
        self.output = ChoiceOutput(self.plan, self.request_id)

    @property
    def blocks(self) -> list[Block]:
        return self.assembler.blocks

    @property
    def stop(self) -> Literal["stop", "length", "tool_calls"]:
        assert self.final is not None
        reason = finish_reason(self.final)
        return "tool_calls" if self.output.called and reason == "stop" else reason


async def open_turn(engine: EngineClient, request: GenerationRequest, prompt_param: str
                    ) -> EngineStream:
    """Start the sequence, waiting for its first output so admission errors get a status."""
    try:
        (stream,) = await open_streams(engine, [request])
    except EngineError as exc:
        raise from_engine_error(exc, prompt_param) from exc
    return stream


async def stream_turn(stream: EngineStream, turn: Turn
                      ) -> AsyncIterator[tuple[GenerationOutput, list[BlockEvent]]]:
    """Every engine output with the block events it caused; the last one closes the blocks."""
    while not stream.finished:
        out = await stream.next()
        events = turn.assembler.feed(turn.output.feed(out.text)) if out.text else []
        if out.finish_reason is not None:
            check_finish(out)
            turn.final = out
            events += turn.assembler.feed(turn.output.finish()) + turn.assembler.close()
        yield out, events


async def complete_turn(stream: EngineStream, turn: Turn) -> Turn:
    """Run the sequence to its end and parse the whole text at once, as chat does."""
    parts = []
    while not stream.finished:
        out = await stream.next()
        parts.append(out.text)
        if out.finish_reason is not None:
            check_finish(out)
            turn.final = out
    turn.assembler.blocks[:] = message_blocks(turn.output.message("".join(parts)))
    return turn


def matched_stop(last_token_text: str, stops: Sequence[str]) -> str | None:
    """Which stop string ended the sequence, if one did. The engine cuts it from the text,
    but the token that completed it is the last one, so that token's text runs up to the
    stop string's last character: it ends with the whole stop string, or with a part of it
    that completes it. An end-of-sequence token's text does neither."""
    t = last_token_text
    for s in stops:
        for end in range(1, len(t) + 1):
            if t[end - 1] == s[-1] and (s.endswith(t[:end]) or t[:end].endswith(s)):
                return s
    return None
