"""Turning the raw string values of XML-style tool calls into the JSON types a tool declares."""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from typing import Any

from mlx_server.parsing._text import loads
from mlx_server.parsing.types import Tools


def tool_properties(tools: Tools | None, name: str) -> Mapping[str, Any]:
    """The `properties` of the named tool's JSON schema ({} when unknown)."""
    for tool in tools or ():
        function = tool.get("function", tool)
        if isinstance(function, Mapping) and function.get("name") == name:
            params = function.get("parameters") or {}
            properties = params.get("properties") if isinstance(params, Mapping) else None
            return properties if isinstance(properties, Mapping) else {}
    return {}


def declared_types(schema: Any) -> set[str]:
    """The JSON types a property schema allows, following anyOf/oneOf and enums."""
    if not isinstance(schema, Mapping):
        return set()
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    types: set[str] = set()
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or ():
            types |= declared_types(option)
    if not types and isinstance(schema.get("enum"), list):
        types = {_json_type(v) for v in schema["enum"]}
    return types


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _parse_literal(raw: str) -> Any:
    """JSON first, then a Python literal (models sometimes write {'a': True})."""
    try:
        return loads(raw)
    except (json.JSONDecodeError, RecursionError):
        pass
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return raw


def coerce(raw: str, schema: Any) -> Any:
    """Convert one raw value to the first declared type it fits.

    Without a declared type a value that parses as JSON is taken as JSON; a value that
    fits no declared type stays a string (the tool then sees what the model wrote).
    """
    types = declared_types(schema)
    text = raw.strip()
    if not types:
        value = _parse_literal(text) if text else raw
        return raw if isinstance(value, str) else value
    if text.lower() in ("null", "none") and ("null" in types or "string" not in types):
        return None
    for kind in ("integer", "number", "boolean", "object", "array"):
        if kind in types:
            converted = _convert(text, kind)
            if converted is not _NO:
                return converted
    return raw


_NO = object()


def _convert(text: str, kind: str) -> Any:
    if kind == "boolean":
        lowered = text.lower()
        return {"true": True, "false": False}.get(lowered, _NO)
    if kind in ("integer", "number"):
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return _NO
        if not math.isfinite(number):
            return _NO  # JSON has no inf or nan
        if kind == "integer":
            return int(number) if number.is_integer() else _NO
        return number
    value = _parse_literal(text)
    wanted = dict if kind == "object" else list
    return value if isinstance(value, wanted) else _NO
