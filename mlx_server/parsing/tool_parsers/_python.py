"""Reading Python-style calls (`name(a=1, b="x")`) with `ast`, never `eval`."""

from __future__ import annotations

import ast
from typing import Any

from mlx_server.parsing.tool_parsers.base import MalformedCall, ParsedCall

# Chat templates render nested values as JSON, so true/false/null show up in Python code.
_JSON_NAMES = {"true": True, "false": False, "null": None}


class _JsonNames(ast.NodeTransformer):
    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in _JSON_NAMES:
            return ast.copy_location(ast.Constant(_JSON_NAMES[node.id]), node)
        return node


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        parent = _dotted(node.value)
        return f"{parent}.{node.attr}" if parent else None
    return None


def call_from_node(node: ast.expr) -> ParsedCall:
    if not isinstance(node, ast.Call):
        raise MalformedCall("not a function call")
    name = _dotted(node.func)
    if name is None:
        raise MalformedCall("call target is not a name")
    if node.args:
        raise MalformedCall(f"{name}() has positional arguments")
    arguments: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise MalformedCall(f"{name}() uses **kwargs")
        try:
            arguments[keyword.arg] = ast.literal_eval(_JsonNames().visit(keyword.value))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
            raise MalformedCall(f"argument {keyword.arg!r} is not a literal") from exc
    return ParsedCall(name, arguments)


def calls_from_list(source: str) -> list[ParsedCall]:
    """Read `[f(a=1), g()]`; the whole source must be that list."""
    tree = ast.parse(source.strip(), mode="eval").body
    if not isinstance(tree, ast.List) or not tree.elts:
        raise MalformedCall("expected a non-empty list of calls")
    return [call_from_node(node) for node in tree.elts]


def calls_from_code(source: str, strip_prefix: str = "") -> list[ParsedCall]:
    """Read a code block of call statements, a list of calls, or `print(call)` lines."""
    module = ast.parse(source.strip(), mode="exec")
    nodes: list[ast.expr] = []
    for statement in module.body:
        if not isinstance(statement, ast.Expr):
            raise MalformedCall("code block holds more than calls")
        value = statement.value
        if isinstance(value, ast.List):
            nodes.extend(value.elts)
            continue
        if isinstance(value, ast.Call) and _dotted(value.func) == "print" and len(value.args) == 1:
            value = value.args[0]
        nodes.append(value)
    if not nodes:
        raise MalformedCall("empty code block")
    calls = [call_from_node(node) for node in nodes]
    if strip_prefix:
        calls = [ParsedCall(c.name.removeprefix(strip_prefix), c.arguments) for c in calls]
    return calls
