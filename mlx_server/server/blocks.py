"""A response's output as a list of blocks (thought, text, tool call), for the wire formats
that stream blocks one after another: Anthropic's content blocks and the Responses API's
output items. Chat completions' deltas (from `ChoiceOutput`) go in; block events come out.

Whitespace between blocks (a newline after a tool call, say) never opens a text block of
its own: Anthropic rejects empty text blocks when a client sends the conversation back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mlx_server.server.protocol import ChatDelta, ResponseMessage

BlockType = Literal["thinking", "text", "tool_use"]


@dataclass
class Block:
    """`text` is the thought, the text, or a tool call's arguments (JSON text)."""

    type: BlockType
    index: int
    text: str = ""
    id: str = ""  # tool calls only
    name: str = ""


@dataclass(frozen=True)
class BlockEvent:
    kind: Literal["start", "delta", "stop"]
    block: Block
    text: str = ""  # the new text of a "delta"


@dataclass
class BlockAssembler:
    """Turns chat deltas into block start/delta/stop events; `blocks` keeps them all."""

    blocks: list[Block] = field(default_factory=list)
    _open: Block | None = field(default=None, init=False)
    _calls: dict[int, Block] = field(default_factory=dict, init=False)  # by tool-call index
    _space: str = field(default="", init=False)  # whitespace held until text follows it

    def feed(self, delta: ChatDelta | None) -> list[BlockEvent]:
        events: list[BlockEvent] = []
        if delta is None:
            return events
        thought = delta.reasoning_content or delta.reasoning
        if thought:
            events += self._append("thinking", thought)
        if delta.content:
            events += self._text(delta.content)
        for call in delta.tool_calls or []:
            block = self._calls.get(call.index)
            if block is None:
                block = self._calls[call.index] = Block(
                    "tool_use", len(self.blocks), id=call.id or "", name=call.function.name or "")
                events += self._start(block)
            if call.function.arguments:
                block.text += call.function.arguments
                events.append(BlockEvent("delta", block, call.function.arguments))
        return events

    def close(self) -> list[BlockEvent]:
        """Stop the open block; what is still held back is dropped."""
        self._space = ""
        return self._stop()

    def _text(self, text: str) -> list[BlockEvent]:
        if self._open is None or self._open.type != "text":
            text, self._space = self._space + text, ""
            if not text.strip():
                self._space = text
                return []
        return self._append("text", text)

    def _append(self, kind: BlockType, text: str) -> list[BlockEvent]:
        events: list[BlockEvent] = []
        if self._open is None or self._open.type != kind:
            events += self._start(Block(kind, len(self.blocks)))
        assert self._open is not None
        self._open.text += text
        events.append(BlockEvent("delta", self._open, text))
        return events

    def _start(self, block: Block) -> list[BlockEvent]:
        events = self._stop()
        self.blocks.append(block)
        self._open = block
        return events + [BlockEvent("start", block)]

    def _stop(self) -> list[BlockEvent]:
        block, self._open = self._open, None
        return [] if block is None else [BlockEvent("stop", block)]


def message_blocks(message: ResponseMessage) -> list[Block]:
    """A whole (non-streamed) message as blocks: thought, text, then tool calls."""
    blocks: list[Block] = []
    thought = message.reasoning_content or message.reasoning
    if thought:
        blocks.append(Block("thinking", len(blocks), thought))
    if message.content and message.content.strip():
        blocks.append(Block("text", len(blocks), message.content))
    for call in message.tool_calls or []:
        blocks.append(Block("tool_use", len(blocks), call.function.arguments, call.id,
                            call.function.name))
    return blocks
