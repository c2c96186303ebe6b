"""Small text helpers shared by the streaming parsers."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterable
from typing import Any

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


def bracket_end(text: str, start: int) -> int:
    """Index just past the bracket that closes the one at text[start], or -1 if not yet closed.

    Knows Python/JSON string quoting, so brackets inside strings do not count.
    """
    closers = {"(": ")", "[": "]", "{": "}"}
    stack: list[str] = []
    quote = ""
    i = start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in closers:
            stack.append(closers[ch])
        elif ch in ")]}":
            if not stack or stack.pop() != ch:
                return i + 1  # mismatched: let the real parser report it
            if not stack:
                return i + 1
        i += 1
    return -1
