"""Grammars for structured outputs: `response_format`, and tool calls forced by `tool_choice`.

The forced-call grammar writes the exact markup the model's tool parser reads (Hermes
`<tool_call>`, Llama 3 JSON, Mistral `[TOOL_CALLS]`); other formats, and models without
one, get bare JSON calls `{"name": ..., "arguments": {...}}` read by the `llama3_json`
parser. Grammars are llguidance's Lark dialect with JSON schemas embedded as `%json{...}`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlx_server.engine.types import Grammar
from mlx_server.server.errors import invalid
from mlx_server.server.protocol import ResponseFormat

# The parser that reads the bare JSON calls of the fallback grammar.
GENERIC_PARSER = "llama3_json"
GENERIC_SEPARATOR = "; "
# Formats whose own markup the grammar writes; the others fall back to bare JSON.
NATIVE_FORMATS = ("hermes", "llama3_json", "mistral")
_COMPACT = {"whitespace_flexible": False}
_SCHEMA_KEYS = ("items", "additionalItems", "not", "if", "then", "else", "contains")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")


def answer_schema(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    """The JSON schema `response_format` asks for, or None for free text."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    spec = fmt.json_schema
    if not isinstance(spec, dict):
        raise invalid("Missing required parameter: 'response_format.json_schema'.",
                      "response_format.json_schema", "missing_required_parameter")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise invalid("Invalid value for 'response_format.json_schema.schema': expected an "
                      "object.", "response_format.json_schema.schema")
    return closed(schema) if spec.get("strict") else schema


def closed(schema: Any) -> Any:
    """OpenAI's strict mode: objects that list their properties allow no others."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    for key in _SCHEMA_KEYS + _SCHEMA_LISTS:
        if key in out:
            out[key] = closed(out[key])
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {k: closed(v) for k, v in out[key].items()}
    return out


def call_schema(tool: Mapping[str, Any], args_key: str = "arguments") -> dict[str, Any]:
    """The JSON object of one call to `tool`: its name, then arguments valid for it."""
    function = tool.get("function") or {}
    params = function.get("parameters") or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": function.get("name", "")}, args_key: closed(params)},
        "required": ["name", args_key],
        "additionalProperties": False,
    }


def tool_call_grammar(
    fmt: str | None, tools: Sequence[Mapping[str, Any]], *, parallel: bool,
    answer: dict[str, Any] | None = None, required: bool = True,
    token_id: Callable[[str], int | None] = lambda marker: None,
) -> tuple[Grammar, str]:
    """A grammar for tool calls in `fmt` (or bare JSON), and the parser that reads them.

    `required` False (tool_choice "auto" with a response_format) also allows the answer
    schema instead of calls. `token_id` maps a marker to its single special token, if any.
    """
    native = fmt if fmt in NATIVE_FORMATS else None
    args_key = "parameters" if native == "llama3_json" else "arguments"
    rules = [f"call_{i}: %json{_dump(call_schema(t, args_key))}" for i, t in enumerate(tools)]
    rules.append("call: " + " | ".join(f"call_{i}" for i in range(len(tools))))
    rules.append(_calls_rule(native, parallel, token_id))
    if answer is not None and not required:
        rules.append(f"answer: %json{_dump(answer)}")
        rules.insert(0, "start: answer | calls")
    else:
        rules.insert(0, "start: calls")
    return Grammar("lark", "\n".join(rules)), native or GENERIC_PARSER


def _calls_rule(native: str | None, parallel: bool,
                token_id: Callable[[str], int | None]) -> str:
    def lit(marker: str) -> str:
        tid = token_id(marker)
        return f"<[{tid}]>" if tid is not None else json.dumps(marker)

    if native == "hermes":
        one = f'{lit("<tool_call>")} "\\n" call "\\n" {lit("</tool_call>")}'
        return f'calls: {one}' + (f' ("\\n" {one})*' if parallel else "")
    if native == "mistral":
        more = ' ("," " " call)*' if parallel else ""
        return f'calls: {lit("[TOOL_CALLS]")} "[" call{more} "]"'
    sep = json.dumps(GENERIC_SEPARATOR)
    return "calls: call" + (f" ({sep} call)*" if parallel else "")


def _dump(schema: Mapping[str, Any]) -> str:
    return json.dumps({**schema, "x-guidance": _COMPACT}, ensure_ascii=False)


def named_tool(choice: Any, tools: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The tool a `{"type": "function", "function": {"name": ...}}` tool_choice names."""
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(name, str):
        raise invalid("Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
                      '{"type": "function", "function": {"name": ...}}.', "tool_choice")
    for tool in tools:
        if (tool.get("function") or {}).get("name") == name:
            return tool
    raise invalid(f"Invalid value for 'tool_choice': no tool named {name!r} in 'tools'.",
                  "tool_choice")
