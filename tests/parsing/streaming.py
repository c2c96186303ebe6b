from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from mlx_server.parsing import StreamDelta


@dataclass
class Collected:
    """A streamed response put back together the way an OpenAI client does it."""

    content: str = ""
    reasoning: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, delta: StreamDelta) -> None:
        self.content += delta.content
        self.reasoning += delta.reasoning
        self.warnings += delta.warnings
        for d in delta.tool_calls:
            if d.index == len(self.calls):
                assert d.id and d.name, "the first delta of a call carries its id and name"
                self.calls.append({"id": d.id, "name": d.name, "arguments": ""})
            else:
                assert d.index == len(self.calls) - 1, "deltas come call by call, in order"
                assert d.id is None and d.name is None
            self.calls[d.index]["arguments"] += d.arguments_fragment

    def named_calls(self) -> list[tuple[str, Any]]:
        return [(c["name"], json.loads(c["arguments"])) for c in self.calls]


def chunk(text: str, cuts: list[int]) -> list[str]:
    points = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    return [text[a:b] for a, b in pairwise(points)]


# Random cut points; any split of the text must parse the same.
cuts_strategy = st.lists(st.integers(min_value=0, max_value=10_000), max_size=40)


def examples(n: int) -> settings:
    """Hypothesis settings for a property test: n examples, no on-disk example database."""
    return settings(
        max_examples=n, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
    )
