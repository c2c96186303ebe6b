"""The tool-parser interface and the streaming machinery every format shares.

A format only says how to cut the next piece off the text it has seen (`step`); the
stream here turns those pieces into OpenAI deltas, call ids and warnings. A non-stream
parse is one `feed` of the whole text plus `finish`, so both paths share one code path
and the conformance suite checks that any chunking of the text gives the same result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from mlx_server.parsing._text import (
    BracketScanner,
    WhitespaceTrim,
    decode_prefix,
    dumps,
    find_first,
    loads,
    partial_marker_len,
    random_id,
    skip_space,
)
from mlx_server.parsing.types import ParseResult, StreamDelta, ToolCall, ToolCallDelta, Tools


class MalformedCall(ValueError):
    """A call region that cannot be read; its text is kept as content."""


@dataclass(frozen=True)
class ParsedCall:
    """A call as the format wrote it; `id` only when the model writes its own ids."""

    name: str
    arguments: Mapping[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class Malformed:
    """A region that is not a readable call: `raw` goes back into the content."""

    raw: str
    reason: str


@dataclass(frozen=True)
class Thought:
    """Reasoning text found by a format that carries its own channels (harmony)."""

    text: str


Event = str | ParsedCall | Malformed | Thought

INVALID = object()  # read_json's value for text that is not valid JSON


class ToolParser(ABC):
    """One tool-call format. Stateless; `stream()` holds the state of one response."""

    name: ClassVar[str]
    # True when the format also carries reasoning, so no separate reasoning parser runs.
    handles_reasoning: ClassVar[bool] = False

    @abstractmethod
    def stream(self, tools: Tools | None = None) -> ToolCallStream:
        """A fresh incremental parser for one response."""

    def parse(self, text: str, tools: Tools | None = None) -> ParseResult:
        """Parse a whole response."""
        stream = self.stream(tools)
        stream.feed(text)
        stream.finish()
        return stream.result

    def new_call_id(self) -> str:
        return "call_" + random_id(24)


class ToolCallStream(ABC):
    """Incremental parse of one response: `feed` chunks, then `finish` once."""

    def __init__(self, parser: ToolParser, tools: Tools | None) -> None:
        self.parser = parser
        self.tools = tools
        # Parts are joined only when `result` is read: no quadratic string growth.
        self._content_parts: list[str] = []
        self._reasoning_parts: list[str] = []
        self._calls: list[ToolCall] = []
        self._warnings: list[str] = []
        self._buf = ""
        self._content = WhitespaceTrim()
        self._thought = WhitespaceTrim(strip_leading=True)
        self._ids: set[str] = set()
        self._call_last = False  # no content since the last call
        self._examined = 0  # chars after the waiting position already looked at
        self._scanner = BracketScanner()
        self._finished = False

    @abstractmethod
    def step(self, buf: str, pos: int, final: bool) -> tuple[list[Event], int]:
        """Read what can be decided from buf[pos:]; return events and the new position.

        Return pos unchanged to wait for more text. With `final`, all text must be consumed.
        """

    @property
    def result(self) -> ParseResult:
        """Everything parsed so far, as one non-streaming result."""
        return ParseResult(
            "".join(self._content_parts),
            list(self._calls),
            "".join(self._reasoning_parts),
            list(self._warnings),
        )

    @property
    def has_content(self) -> bool:
        return bool(self._content_parts)

    @property
    def has_reasoning(self) -> bool:
        return bool(self._reasoning_parts)

    def feed(self, text: str) -> StreamDelta:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        # Detaching the buffer first lets CPython grow it in place instead of copying.
        buf, self._buf = self._buf, ""
        buf += text
        self._buf = buf
        return self._drain(final=False)

    def finish(self) -> StreamDelta:
        if self._finished:
            return StreamDelta()
        delta = self._drain(final=True)
        if self._buf:  # a format that left text behind: never drop it
            self._emit(self._buf, delta)
            self._buf = ""
        self._finished = True
        tail = self._content.flush()
        if not self._call_last:  # whitespace after the last call is layout
            self._add_content(tail, delta)
        return delta

    def _drain(self, final: bool) -> StreamDelta:
        delta = StreamDelta()
        pos = 0
        while pos < len(self._buf):
            try:
                events, new_pos = self.step(self._buf, pos, final)
            except Exception as exc:  # noqa: BLE001 - a parser bug must not lose the text
                events = [Malformed(self._buf[pos:], f"parser error: {exc!r}")]
                new_pos = len(self._buf)
            for event in events:
                self._emit(event, delta)
            if new_pos <= pos:
                break
            pos, self._examined = new_pos, 0
        self._buf = self._buf[pos:]
        return delta

    def _emit(self, event: Event, delta: StreamDelta) -> None:
        if isinstance(event, str):
            self._add_content(self._content.push(event), delta)
        elif isinstance(event, Thought):
            text = self._thought.push(event.text)
            delta.reasoning += text
            if text:
                self._reasoning_parts.append(text)
        elif isinstance(event, ParsedCall):
            self._add_call(event, delta)
        else:
            warning = (
                f"{self.parser.name}: malformed tool call kept as text "
                f"({event.reason}): {event.raw[:200]!r}"
            )
            delta.warnings.append(warning)
            self._warnings.append(warning)
            self._add_content(self._content.push(event.raw), delta)

    def wait(self, buf: str, pos: int) -> tuple[list[Event], int]:
        """Step result for "need more text at pos"; remembers what was already examined."""
        self._examined = len(buf) - pos
        return [], pos

    def unexamined(self, pos: int) -> int:
        """Where text that arrived since the last wait at pos begins."""
        return pos + self._examined

    def read_json(self, buf: str, at: int, final: bool) -> tuple[Any, int] | None:
        """Decode the JSON value at `at` once it is complete; None means wait for more text.

        An invalid value gives (INVALID, end), end being where its brackets close.
        """
        start = skip_space(buf, at)
        end = -1
        if start < len(buf) and buf[start] in "[{":
            end = self._scanner.end(buf, start)
        if end == -1 and not final:
            return None
        self._scanner.reset()
        stop = len(buf) if end == -1 else end
        decoded = decode_prefix(buf[:stop], start)
        return decoded if decoded is not None else (INVALID, stop)

    def end_thought(self) -> None:
        """Called by formats when a reasoning block closes: its trailing whitespace goes."""
        self._thought.drop_pending()
        self._thought.strip_leading = not self.has_reasoning

    def _add_content(self, text: str, delta: StreamDelta) -> None:
        if text:
            self._call_last = False
            self._content_parts.append(text)
            delta.content += text

    def _add_call(self, call: ParsedCall, delta: StreamDelta) -> None:
        call_id = call.id if call.id and call.id not in self._ids else self.parser.new_call_id()
        self._ids.add(call_id)
        arguments = dumps(dict(call.arguments))
        index = len(self._calls)
        self._calls.append(ToolCall(call_id, call.name, arguments))
        delta.tool_calls.append(ToolCallDelta(index, call_id, call.name, arguments))
        # Whitespace before a call is layout; after it, it separates text around the call.
        self._content.drop_pending()
        self._content.strip_leading = not self.has_content
        self._call_last = True


def plain_text_step(
    buf: str, pos: int, final: bool, markers: tuple[str, ...]
) -> tuple[list[Event], int, int, str]:
    """Emit text up to the first marker, holding back a partial marker at the end.

    Returns (events, new_pos, marker_index, marker); marker_index is -1 when none was found.
    """
    idx, marker = find_first(buf, pos, markers)
    if idx == -1:
        end = len(buf) if final else len(buf) - partial_marker_len(buf, pos, markers)
        return ([buf[pos:end]] if end > pos else []), end, -1, ""
    return ([buf[pos:idx]] if idx > pos else []), idx, idx, marker


class RegionParser(ToolParser):
    """A format whose calls sit between a start and an end marker.

    Subclasses name the markers and read one region's body. `silent` markers (section
    wrappers around a group of calls) are dropped from the content.
    """

    regions: ClassVar[Mapping[str, str]]  # start marker -> end marker
    silent: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def parse_body(self, start: str, body: str, tools: Tools | None) -> list[ParsedCall]:
        """Read the calls in one region; raise MalformedCall when it cannot."""

    def stream(self, tools: Tools | None = None) -> ToolCallStream:
        return RegionStream(self, tools)


class RegionStream(ToolCallStream):
    parser: RegionParser

    def __init__(self, parser: RegionParser, tools: Tools | None) -> None:
        super().__init__(parser, tools)
        self._markers = tuple(parser.regions) + parser.silent
        self._open: str | None = None  # start marker of a region waiting for its end

    def step(self, buf: str, pos: int, final: bool) -> tuple[list[Event], int]:
        if self._open is not None:
            return self.region_step(buf, pos, self._open, final)
        events, new_pos, idx, marker = plain_text_step(buf, pos, final, self._markers)
        if idx != pos:
            return events, new_pos
        if marker in self.parser.silent:
            return [], pos + len(marker)
        return self.region_step(buf, pos, marker, final)

    def region_step(self, buf: str, pos: int, start: str, final: bool) -> tuple[list[Event], int]:
        """Read the region opened by `start` at pos once its end marker (or the end) is seen."""
        end_marker = self.parser.regions[start]
        body_start = pos + len(start)
        end = buf.find(end_marker, max(body_start, self.unexamined(pos) - len(end_marker)))
        if end == -1 and not final:
            self._open = start
            return self.wait(buf, pos)
        self._open = None
        stop = len(buf) if end == -1 else end + len(end_marker)
        body = buf[body_start : len(buf) if end == -1 else end]
        parse = partial(self.parser.parse_body, start, body, self.tools)
        return read_calls(parse, buf[pos:stop]), stop


def read_calls(parse: Callable[[], list[ParsedCall]], raw: str) -> list[Event]:
    """The calls `parse` reads from one region, or the region's text as a Malformed event."""
    try:
        calls = parse()
    except (MalformedCall, ValueError, TypeError, SyntaxError, RecursionError) as exc:
        return [Malformed(raw, str(exc) or type(exc).__name__)]
    if not calls:
        return [Malformed(raw, "no call in region")]
    return list(calls)


def call_from_json(obj: Any, keep_id: bool = False) -> ParsedCall:
    """Read `{"name": ..., "arguments"|"parameters": {...}}`, the shape most JSON formats use.

    `keep_id` keeps an "id" the model wrote (formats whose templates echo ids back).
    """
    if not isinstance(obj, dict):
        raise MalformedCall("call is not a JSON object")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedCall("call has no name")
    key = "arguments" if "arguments" in obj else "parameters"
    call_id = obj.get("id") if keep_id and isinstance(obj.get("id"), str) else None
    return ParsedCall(name, arguments_object(obj.get(key, {})), call_id)


def json_body(text: str) -> Any:
    """The one JSON value `text` holds (whitespace around it allowed)."""
    try:
        return loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedCall("not one JSON value") from exc


def arguments_object(value: Any) -> Mapping[str, Any]:
    """Arguments as a dict; some models write them as a JSON string, null means none."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = loads(value) if value.strip() else {}
        except ValueError as exc:
            raise MalformedCall("arguments string is not JSON") from exc
    if not isinstance(value, dict):
        raise MalformedCall("arguments are not a JSON object")
    return value
