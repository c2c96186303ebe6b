"""The engine and the parsers never pull in the HTTP stack."""

import subprocess
import sys


def _imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_engine_does_not_import_http():
    mods = _imported_after("mlx_server.engine.async_engine")
    assert not {m for m in mods if m.split(".")[0] in {"fastapi", "starlette", "uvicorn", "pydantic"}}
    assert "mlx_server.server" not in mods


def test_parsing_is_pure_text():
    mods = _imported_after("mlx_server.parsing")
    assert not {m for m in mods if m.split(".")[0] in {"fastapi", "starlette", "pydantic", "mlx"}}


def test_server_does_not_import_mlx():
    mods = _imported_after("mlx_server.server.app")
    assert not {m for m in mods if m.split(".")[0] == "mlx"}
