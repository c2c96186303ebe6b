"""The parsing package is pure text: importing all of it pulls in no server or mlx code."""

from __future__ import annotations

import subprocess
import sys

_CHECK = """
import sys
import mlx_server.parsing as parsing
for name in parsing.tool_parser_names():
    parsing.get_tool_parser(name)
for name in parsing.reasoning_parser_names():
    parsing.get_reasoning_parser(name)
heavy = [m for m in ("fastapi", "starlette", "pydantic", "mlx", "mlx_lm", "numpy") if m in sys.modules]
assert not heavy, heavy
"""


def test_parsing_imports_no_server_or_mlx_code() -> None:
    subprocess.run([sys.executable, "-c", _CHECK], check=True)
