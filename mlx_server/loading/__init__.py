"""Model loading: GGUF import, the embedded default model, and `--model` resolution.

Names are imported lazily so that `from mlx_server.loading import ModelNotFoundError`
does not pull in mlx, gguf or tokenizers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .default_model import default_model_path
    from .errors import GGUFImportError, ModelNotFoundError
    from .gguf_import import import_gguf
    from .resolve import ResolvedModel, resolve_model

_EXPORTS = {
    "GGUFImportError": "errors",
    "ModelNotFoundError": "errors",
    "ResolvedModel": "resolve",
    "default_model_path": "default_model",
    "import_gguf": "gguf_import",
    "resolve_model": "resolve",
}
__all__ = [
    "GGUFImportError",
    "ModelNotFoundError",
    "ResolvedModel",
    "default_model_path",
    "import_gguf",
    "resolve_model",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
