"""Tools for models whose chat template knows nothing of them (Gemma 3, base models).

The tools are described in a system message and past calls and results are written as
plain turns, so the conversation still renders (such templates reject `tool` roles and
ignore `tool_calls`); the model is asked for the bare JSON calls that
`structured.GENERIC_PARSER` reads and the fallback grammar enforces.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mlx_server.server.structured import GENERIC_SEPARATOR


def template_supports_tools(template: str | None) -> bool:
    """Unknown (None) counts as yes: whoever renders without a template handles tools."""
    return template is None or "tools" in template


def tools_message(tools: Sequence[Mapping[str, Any]]) -> str:
    lines = ["You can call these tools:"]
    for tool in tools:
        function = tool.get("function") or {}
        lines.append(json.dumps({k: function[k] for k in ("name", "description", "parameters")
                                 if k in function}, ensure_ascii=False))
    lines.append('To call a tool, reply with only a JSON object: {"name": <tool name>, '
                 f'"arguments": <arguments object>}}; separate several calls with '
                 f'"{GENERIC_SEPARATOR.strip()}".')
    return "\n".join(lines)


def plain_messages(messages: list[dict[str, Any]], tools: Sequence[Mapping[str, Any]] | None
                   ) -> list[dict[str, Any]]:
    """`messages` with tools described up front and calls and results as plain turns."""
    out: list[dict[str, Any]] = []
    if tools:
        out.append({"role": "system", "content": tools_message(tools)})
    for m in messages:
        m = dict(m)
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = [json.dumps({"name": c["function"]["name"],
                                 "arguments": c["function"]["arguments"]}, ensure_ascii=False)
                     for c in m.pop("tool_calls")]
            m["content"] = "\n".join(filter(None, [m.get("content"),
                                                   GENERIC_SEPARATOR.join(calls)]))
        elif m["role"] == "tool":
            m = {"role": "user", "content": f"Tool result: {m.get('content', '')}"}
        if out and out[-1]["role"] == m["role"] and m["role"] in ("user", "system"):
            out[-1] = {**out[-1], "content": f"{out[-1]['content']}\n\n{m['content']}"}
        else:
            out.append(m)
    return out
