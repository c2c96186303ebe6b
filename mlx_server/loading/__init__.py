"""Model loading: GGUF import, the embedded default model, and `--model` resolution."""

from .default_model import default_model_path
from .errors import GGUFImportError, ModelNotFoundError
from .gguf_import import import_gguf
from .resolve import ResolvedModel, resolve_model

__all__ = [
    "GGUFImportError",
    "ModelNotFoundError",
    "ResolvedModel",
    "default_model_path",
    "import_gguf",
    "resolve_model",
]
