"""Chat deltas → output blocks, shared by the Anthropic and Responses streams."""

from __future__ import annotations

from mlx_server.server.blocks import BlockAssembler, message_blocks
from mlx_server.server.protocol import (
    ChatDelta,
    DeltaFunction,
    DeltaToolCall,
    ResponseFunction,
    ResponseMessage,
    ResponseToolCall,
)


def call(index, name=None, args="", id=None):
    return ChatDelta(tool_calls=[DeltaToolCall(index=index, id=id, function=DeltaFunction(
        name=name, arguments=args))])


def run(deltas):
    assembler = BlockAssembler()
    events = [e for d in deltas for e in assembler.feed(d)] + assembler.close()
    return assembler.blocks, [(e.kind, e.block.index, e.text) for e in events]


def test_blocks_open_and_close_in_order():
    blocks, events = run([
        ChatDelta(reasoning_content="hm"), ChatDelta(reasoning_content="m"),
        ChatDelta(content="Hi"), None, ChatDelta(content=" there"),
        call(0, "f", '{"a"', id="call_1"), call(0, args=": 1}"), call(1, "g", "{}", id="call_2"),
    ])
    assert [(b.type, b.text, b.id, b.name) for b in blocks] == [
        ("thinking", "hmm", "", ""), ("text", "Hi there", "", ""),
        ("tool_use", '{"a": 1}', "call_1", "f"), ("tool_use", "{}", "call_2", "g")]
    assert events == [
        ("start", 0, ""), ("delta", 0, "hm"), ("delta", 0, "m"), ("stop", 0, ""),
        ("start", 1, ""), ("delta", 1, "Hi"), ("delta", 1, " there"), ("stop", 1, ""),
        ("start", 2, ""), ("delta", 2, '{"a"'), ("delta", 2, ": 1}"), ("stop", 2, ""),
        ("start", 3, ""), ("delta", 3, "{}"), ("stop", 3, "")]


def test_whitespace_between_blocks_opens_none():
    blocks, _ = run([call(0, "f", "{}", id="c"), ChatDelta(content="\n"),
                     call(1, "g", "{}", id="d"), ChatDelta(content="\n ")])
    assert [b.type for b in blocks] == ["tool_use", "tool_use"]
    blocks, _ = run([ChatDelta(content="\n"), ChatDelta(content="\nHi"),
                     ChatDelta(content=" \n")])
    assert [(b.type, b.text) for b in blocks] == [("text", "\n\nHi \n")]


def test_message_blocks():
    message = ResponseMessage(content="\n", reasoning_content="why", tool_calls=[
        ResponseToolCall(id="call_1", function=ResponseFunction(name="f", arguments="{}"))])
    assert [(b.type, b.index) for b in message_blocks(message)] == [
        ("thinking", 0), ("tool_use", 1)]
