"""The on-disk cache of imported models: where it lives, content hashes, atomic publishing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

_INDEX_NAME = "sha256-index.json"
_TMP_PREFIX = ".tmp-"


def default_cache_root() -> Path:
    """`$XDG_CACHE_HOME/mlx-server/gguf`, else `~/.cache/mlx-server/gguf`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlx-server" / "gguf"


def file_sha256(path: Path, cache_root: Path) -> str:
    """The file's sha256, remembered by (path, size, mtime) so a restart need not rehash."""
    stat = path.stat()
    key = str(path.resolve())
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    index = _read_index(cache_root)
    entry = index.get(key)
    if entry and all(entry.get(k) == v for k, v in stamp.items()) and entry.get("sha256"):
        return str(entry["sha256"])
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    index[key] = {**stamp, "sha256": digest.hexdigest()}
    _write_json_atomic(cache_root / _INDEX_NAME, index)
    return digest.hexdigest()


def _read_index(cache_root: Path) -> dict:
    try:
        data = json.loads((cache_root / _INDEX_NAME).read_text())
    except (OSError, ValueError):
        return {}  # missing or damaged: it is only a cache of hashes
    return data if isinstance(data, dict) else {}


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


def make_staging_dir(cache_root: Path, name: str) -> Path:
    """A fresh folder beside the final one (same filesystem, so the rename is atomic).

    The pid in its name lets a later import remove folders left by a killed process.
    """
    cache_root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(cache_root)
    return Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-{name}-", dir=cache_root))


def publish(staging: Path, target: Path) -> Path:
    """Rename the finished staging folder into place; if another process won, keep theirs."""
    try:
        os.rename(staging, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _remove_abandoned(cache_root: Path) -> None:
    for entry in cache_root.glob(f"{_TMP_PREFIX}*"):
        pid = entry.name[len(_TMP_PREFIX) :].split("-", 1)[0]
        if entry.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
