"""Reading the `event:` + `data:` streams of the Anthropic and Responses endpoints."""

from __future__ import annotations

import json
from typing import Any


def named_events(text: str) -> list[dict[str, Any]]:
    """The payloads of a named-event SSE body, checking each `event:` line matches its
    payload's `type` and that no `[DONE]` follows (neither API sends one)."""
    events = text.split("\n\n")
    assert events[-1] == "", "the stream must end with a blank line"
    payloads = []
    for e in events[:-1]:
        kind, data = e.split("\n")
        assert kind.startswith("event: ") and data.startswith("data: "), e
        payload = json.loads(data[len("data: "):])
        assert payload["type"] == kind[len("event: "):]
        payloads.append(payload)
    return payloads


def types(payloads: list[dict[str, Any]]) -> list[str]:
    return [p["type"] for p in payloads]
