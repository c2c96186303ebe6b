"""Turn the user's `--model` value into a local MLX model folder. Nothing here goes online."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .default_model import DISPLAY_NAME, default_model_path
from .errors import ModelNotFoundError
from .gguf_import import import_gguf


@dataclass(frozen=True)
class ResolvedModel:
    """A loadable MLX model folder and where it came from."""

    path: Path
    source: str  # "default" | "gguf" | "folder" | "hf-cache"
    display_name: str


def resolve_model(spec: str | None, dtype: str = "auto", *, progress: bool = True) -> ResolvedModel:
    """None -> default model; a .gguf file -> imported; a model folder -> itself;
    anything else -> a Hugging Face repo id looked up in the local cache only.

    `dtype` applies to GGUF imports ("auto": float32 on CPU, bfloat16 on a GPU).
    """
    gguf_dtype = _gguf_dtype(dtype)
    if spec is None or spec == "":
        return ResolvedModel(default_model_path(gguf_dtype, progress), "default", DISPLAY_NAME)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        folder = import_gguf(path, dtype=gguf_dtype, progress=progress)
        return ResolvedModel(folder, "gguf", path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a folder but has no config.json; not a model")
        return ResolvedModel(path.resolve(), "folder", path.resolve().name)
    if path.exists():
        raise ModelNotFoundError(f"{path} is neither a .gguf file nor a model folder")
    if _looks_like_path(spec):
        raise ModelNotFoundError(f"No such file or folder: {spec}")
    return _from_hf_cache(spec, gguf_dtype, progress)


def _gguf_dtype(dtype: str) -> str:
    if dtype != "auto":
        return dtype
    import mlx.core as mx

    # float32 is faster than bf16 on CPU (no native bf16 math) and exact to the GGUF.
    return "float32" if mx.default_device() == mx.cpu else "bfloat16"


def _looks_like_path(spec: str) -> bool:
    """Repo ids are `name` or `owner/name`; anything else the user meant as a path."""
    return (
        spec.startswith((".", "/", "~"))
        or "\\" in spec
        or spec.count("/") > 1
        or spec.lower().endswith((".gguf", ".safetensors", ".json"))
        or (os.sep != "/" and os.sep in spec)
    )


def _from_hf_cache(repo_id: str, dtype: str, progress: bool) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except HFValidationError:
        raise ModelNotFoundError(
            f"{repo_id!r} is not an existing file or folder, nor a valid Hugging Face repo id"
        ) from None
    except (LocalEntryNotFoundError, OSError):
        raise ModelNotFoundError(
            f"{repo_id!r} is not a local file or folder and is not in the local Hugging Face "
            "cache. This server never downloads (the machine may be offline); on a machine "
            f"with internet access run:\n    hf download {repo_id}\n"
            "then copy the cache (HF_HUB_CACHE), or pass a local folder or .gguf file."
        ) from None
    if (folder / "config.json").is_file():
        return ResolvedModel(folder, "hf-cache", repo_id)
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) == 1:
        folder = import_gguf(ggufs[0], dtype=dtype, progress=progress)
        return ResolvedModel(folder, "hf-cache", repo_id)
    names = ", ".join(g.name for g in ggufs) or "no config.json and no .gguf file"
    raise ModelNotFoundError(
        f"The cached snapshot of {repo_id!r} at {folder} is not a single model ({names}); "
        "pass the path of the file or folder to use"
    )
