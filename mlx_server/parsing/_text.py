"""Small text helpers shared by the streaming parsers."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterable
from typing import Any, ClassVar

_ID_ALPHABET = string.ascii_letters + string.digits


def random_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def find_first(text: str, start: int, markers: Iterable[str]) -> tuple[int, str]:
    """The earliest marker at or after `start` (longest wins a tie), or (-1, "")."""
    best, found = -1, ""
    for marker in markers:
        i = text.find(marker, start)
        if i != -1 and (best == -1 or i < best or (i == best and len(marker) > len(found))):
            best, found = i, marker
    return best, found


def partial_marker_len(text: str, start: int, markers: Iterable[str]) -> int:
    """Length of the longest tail of text[start:] that could still grow into a marker.

    That tail is held back so that a marker split across chunks never leaks as text.
    """
    size = len(text) - start
    longest = 0
    for marker in markers:
        for k in range(min(len(marker) - 1, size), longest, -1):
            if text.endswith(marker[:k]):
                longest = k
                break
    return longest


class WhitespaceTrim:
    """Streams text, dropping leading whitespace when asked and holding trailing whitespace.

    Holding the tail lets whitespace that turns out to touch a tool call or a closing
    marker be dropped, while plain text still comes out byte for byte.
    """

    def __init__(self, strip_leading: bool = False) -> None:
        self.strip_leading = strip_leading
        self._pending = ""

    def push(self, text: str) -> str:
        if self.strip_leading:
            text = text.lstrip()
            if not text:
                return ""
            self.strip_leading = False
        text = self._pending + text
        body = text.rstrip()
        self._pending = text[len(body) :]
        return body

    def drop_pending(self) -> None:
        self._pending = ""

    def flush(self) -> str:
        pending, self._pending = self._pending, ""
        return pending


def loads(text: str) -> Any:
    """json.loads that accepts raw control characters (newlines) inside strings."""
    return json.loads(text, strict=False)


_DECODER = json.JSONDecoder(strict=False)


def decode_prefix(text: str, start: int) -> tuple[Any, int] | None:
    """Decode one JSON value at text[start:] (leading whitespace skipped).

    Returns (value, end) or None when the value is incomplete or invalid.
    """
    while start < len(text) and text[start].isspace():
        start += 1
    try:
        return _DECODER.raw_decode(text, start)
    except (json.JSONDecodeError, RecursionError):
        return None


def skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class BracketScanner:
    """Finds where the bracketed value opening at a start position closes.

    Knows JSON/Python string quoting, so brackets inside strings do not count, and
    keeps its place between calls so streamed text is scanned once, not once per chunk.
    Positions are relative to `start`, which may move when the caller trims its buffer.
    """

    _CLOSERS: ClassVar[dict[str, str]] = {"(": ")", "[": "]", "{": "}"}

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._stack: list[str] = []
        self._quote = ""
        self._escaped = False
        self._scanned = 0

    def end(self, text: str, start: int) -> int:
        """Index just past the closing bracket, or -1 while it has not arrived."""
        i = start + self._scanned
        while i < len(text):
            ch = text[i]
            if self._escaped:
                self._escaped = False
            elif self._quote:
                if ch == "\\":
                    self._escaped = True
                elif text.startswith(self._quote, i):
                    i += len(self._quote) - 1
                    self._quote = ""
                elif self._quote.startswith(text[i:]):
                    break  # maybe the start of a closing triple quote: wait for it
            elif ch in "\"'":
                if text.startswith(ch * 3, i):
                    self._quote = ch * 3
                    i += 2
                elif (ch * 3).startswith(text[i:]):
                    break  # a triple quote may be arriving
                else:
                    self._quote = ch
            elif ch in self._CLOSERS:
                self._stack.append(self._CLOSERS[ch])
            elif ch in ")]}" and (not self._stack or self._stack.pop() != ch or not self._stack):
                # Closed the outermost bracket, or mismatched: the real parser then reports it.
                self._scanned = i + 1 - start
                return i + 1
            i += 1
        self._scanned = i - start
        return -1
