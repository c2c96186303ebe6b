"""Re-vendor `openai_schemas.json` from OpenAI's published OpenAPI spec.

Usage: python tests/server/vendor_openai_schemas.py path/to/openapi.json [commit]
The spec comes from https://github.com/openai/openai-openapi (public spec data). Only the
response schemas the server emits, and what they reference, are kept; OpenAPI's
`nullable: true` is rewritten to JSON Schema so `jsonschema` can check it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
)
DROP_KEYS = {"description", "x-oaiMeta", "x-stainless-const", "example", "title", "deprecated"}


def _collect(schemas: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                name = ref.rsplit("/", 1)[-1]
                if name not in seen:
                    seen[name] = schemas[name]
                    walk(schemas[name])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for root in ROOTS:
        seen[root] = schemas[root]
        walk(schemas[root])
    return seen


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items() if k not in DROP_KEYS and k != "nullable"}
    if isinstance(node.get("properties"), dict):
        # Property names are data, not keywords: a field called "title" must survive.
        out["properties"] = {k: _convert(v) for k, v in node["properties"].items()}
    if "$ref" in out:
        out["$ref"] = "#/$defs/" + out["$ref"].rsplit("/", 1)[-1]
    if node.get("nullable") is True:
        # `$ref` siblings are legal in 2020-12, so wrapping keeps every constraint.
        return {"anyOf": [out, {"type": "null"}]}
    return out


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    commit = sys.argv[2] if len(sys.argv) > 2 else "unknown"
    defs = _collect(spec["components"]["schemas"])
    doc = {
        "$comment": (
            "Vendored from https://github.com/openai/openai-openapi openapi.json "
            f"(commit {commit}, spec version {spec['info'].get('version')}) by "
            "tests/server/vendor_openai_schemas.py; descriptions stripped, nullable rewritten."
        ),
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {name: _convert(defs[name]) for name in sorted(defs)},
    }
    out = Path(__file__).with_name("openai_schemas.json")
    out.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    main()
