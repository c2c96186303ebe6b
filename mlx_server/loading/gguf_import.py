"""Import a GGUF file as an MLX model folder that `mlx_lm.utils.load` can open.

The folder is cached under the GGUF's sha256 and the weight dtype, and built in a staging
folder that is renamed into place only when complete.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from .chat_templates import known_template
from .errors import GGUFImportError
from .gguf_arch import ArchSpec, Meta, arch_spec
from .gguf_cache import default_cache_root, file_sha256, make_staging_dir, publish
from .gguf_file import GGUFFile, check_magic, read_gguf
from .gguf_tensors import DTYPES, MAX_SHARD_BYTES, check_layout, write_weights
from .gguf_tokenizer import GGUFTokenizer, build_tokenizer

logger = logging.getLogger(__name__)

# Bump when the importer's output changes, so stale cached folders are not reused.
FORMAT_VERSION = 1


def import_gguf(
    gguf_path: str | Path,
    *,
    dtype: str = "float32",
    cache_root: Path | None = None,
    progress: bool = True,
) -> Path:
    """Return an MLX model folder for `gguf_path`, importing it on first use.

    Raises `GGUFImportError` with a user-facing message for any problem with the file.
    """
    if dtype not in DTYPES:
        raise GGUFImportError(f"unsupported dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    path = Path(gguf_path).expanduser()
    check_magic(path)  # before hashing, so a wrong file fails fast
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    try:
        digest = file_sha256(path, root)
    except OSError as exc:
        raise GGUFImportError(f"cannot read {path} or write the cache at {root}: {exc}") from None
    target = root / f"{digest[:16]}-{dtype}-v{FORMAT_VERSION}"
    if (target / "config.json").is_file():
        logger.info("GGUF import cache hit: %s -> %s", path.name, target)
        return target
    return _import_fresh(path, target, root, dtype, digest, progress)


def _import_fresh(
    path: Path, target: Path, root: Path, dtype: str, digest: str, progress: bool
) -> Path:
    started = time.perf_counter()
    gguf = read_gguf(path)
    try:
        staging = make_staging_dir(root, target.name)
        try:
            build_model_folder(gguf, staging, dtype=dtype, progress=progress)
            _write_json(staging / "gguf_source.json", _provenance(path, digest, dtype))
            publish(staging, target)
        except GGUFImportError:
            raise
        except OSError as exc:
            raise GGUFImportError(f"cannot write the imported model under {root}: {exc}") from exc
        except Exception as exc:  # a bug or an odd file: still a message, not a traceback
            raise GGUFImportError(f"failed to import {path}: {type(exc).__name__}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        gguf.close()
    elapsed = time.perf_counter() - started
    logger.info("Imported %s (%s) in %.1fs -> %s", path.name, dtype, elapsed, target)
    return target


def build_model_folder(
    gguf: GGUFFile,
    out_dir: Path,
    *,
    dtype: str = "float32",
    progress: bool = True,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> None:
    """Write config, tokenizer and weights for `gguf` into `out_dir` (no caching)."""
    spec = arch_spec(gguf)
    config = {"model_type": spec.model_type, **spec.build_config(Meta(gguf))}
    check_layout(gguf, spec, config)
    tok = build_tokenizer(gguf)
    template, end_of_turn = _chat_template(gguf, tok)
    eos_ids = _eos_ids(gguf, tok, end_of_turn)
    config.update(_config_header(spec, dtype, tok, eos_ids))
    _write_json(out_dir / "config.json", config)
    _write_json(out_dir / "generation_config.json", _generation_config(tok, eos_ids))
    tok.tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(tok, template, config))
    _write_json(out_dir / "special_tokens_map.json", _special_tokens_map(tok))
    write_weights(gguf, spec, config, out_dir, dtype, progress, max_shard_bytes)


def _chat_template(gguf: GGUFFile, tok: GGUFTokenizer) -> tuple[str | None, tuple[str, ...]]:
    known = known_template(gguf.architecture, tok.tokens)
    end_of_turn = known.end_of_turn if known else ()
    template = gguf.metadata.get("tokenizer.chat_template")
    if template:
        return str(template), end_of_turn
    if known is None:
        logger.warning("%s has no chat template and none is known for it", gguf.path.name)
        return None, end_of_turn
    logger.warning(
        "%s has no chat template; using the built-in %s template as a fallback",
        gguf.path.name,
        gguf.architecture,
    )
    return known.template, end_of_turn


def _eos_ids(gguf: GGUFFile, tok: GGUFTokenizer, end_of_turn: tuple[str, ...]) -> list[int]:
    """eos plus every token that ends a turn, so chat generation stops at the turn's end."""
    ids = [tok.special_ids["eos_token"]] if "eos_token" in tok.special_ids else []
    for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        value = gguf.metadata.get(key)
        if value is not None and 0 <= int(value) < len(tok.tokens):
            ids.append(int(value))
    index = {t: i for i, t in enumerate(tok.tokens) if t in end_of_turn}
    ids += [index[t] for t in end_of_turn if t in index]
    return list(dict.fromkeys(ids))


def _config_header(
    spec: ArchSpec, dtype: str, tok: GGUFTokenizer, eos_ids: list[int]
) -> dict[str, Any]:
    return {
        "model_type": spec.model_type,
        "architectures": [spec.hf_architecture],
        "torch_dtype": dtype,
        "bos_token_id": tok.special_ids.get("bos_token"),
        "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else eos_ids,
        "pad_token_id": tok.special_ids.get("pad_token"),
    }


def _generation_config(tok: GGUFTokenizer, eos_ids: list[int]) -> dict[str, Any]:
    config = {
        "bos_token_id": tok.special_ids.get("bos_token"),
        "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else eos_ids,
        "pad_token_id": tok.special_ids.get("pad_token"),
    }
    return {k: v for k, v in config.items() if v is not None}


def _tokenizer_config(tok: GGUFTokenizer, template: str | None, config: dict) -> dict[str, Any]:
    result: dict[str, Any] = {
        # The generic class loads tokenizer.json as written instead of rebuilding it.
        "tokenizer_class": "PreTrainedTokenizerFast",
        **_special_tokens_map(tok),
        "add_bos_token": tok.add_bos_token,
        "add_eos_token": tok.add_eos_token,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config.get("max_position_embeddings", 4096),
    }
    if template:
        result["chat_template"] = template
    return result


def _special_tokens_map(tok: GGUFTokenizer) -> dict[str, str]:
    roles = ("bos_token", "eos_token", "unk_token", "pad_token")
    return {role: token for role in roles if (token := tok.token(role)) is not None}


def _provenance(path: Path, digest: str, dtype: str) -> dict[str, Any]:
    return {
        "source": str(path.resolve()),
        "sha256": digest,
        "dtype": dtype,
        "format_version": FORMAT_VERSION,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
