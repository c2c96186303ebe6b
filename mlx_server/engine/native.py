"""Small C kernels built for this machine at first use, and cached.

MLX's CPU backend already compiles fused kernels with the system C++ compiler at run
time (`mx.compile`); the kernels here take the same route for products no library on
the package registries offers (see panel_head.py). Each is built with `-O3
-march=native` into a cache keyed by its source, the compiler, the flags and the CPU's
feature flags, so a home directory shared between machines never loads a library built
for another CPU. No compiler, or a failed build, means `None`: callers keep their
portable path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from importlib import resources
from pathlib import Path

from ..loading.gguf_cache import default_cache_root

log = logging.getLogger("mlx_server.engine")

# One flag set per attempt, first that builds wins. Only -march=native: a kernel built
# for a baseline CPU can be far slower than the portable path it replaces.
FLAG_SETS = (["-O3", "-march=native"],)
_LOCK = threading.Lock()
_BUILT: dict[str, ctypes.CDLL | None] = {}
# Set MLX_SERVER_NATIVE=0 to never build or load these kernels.
ENABLED = os.environ.get("MLX_SERVER_NATIVE", "1") != "0"


def cache_dir() -> Path:
    """`$MLX_SERVER_CACHE/native`, else `native` beside the GGUF import cache."""
    base = os.environ.get("MLX_SERVER_CACHE")
    return (Path(base) if base else default_cache_root().parent) / "native"


def _usable_dir() -> Path | None:
    """The cache folder, or a temporary one where it cannot be written (a read-only home,
    as in containers with a read-only root filesystem); None if neither can."""
    for d in (cache_dir(), Path(tempfile.gettempdir()) / f"mlx-server-native-{os.getuid()}"):
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK | os.X_OK):
                return d
        except OSError:
            continue
    return None


def compiler() -> str | None:
    cc = os.environ.get("CC")
    return cc if cc and shutil.which(cc) else shutil.which("cc") or shutil.which("gcc") \
        or shutil.which("clang")


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    keep = [ln for ln in lines if ln.split(":")[0].strip() in
            ("flags", "Features", "model name", "CPU part", "CPU implementer")]
    return "\n".join(dict.fromkeys(keep)) + platform.machine() + platform.processor()


def _version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, check=False,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _compile(cc: str, source: Path, flags: list[str], out: Path) -> bool:
    try:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
    except OSError as e:
        log.debug("building %s failed: %s", source.name, e)
        return False
    try:
        r = subprocess.run([cc, *flags, "-shared", "-fPIC", "-o", tmp, str(source)],
                           capture_output=True, text=True, timeout=300, check=False)
        if r.returncode != 0:
            log.debug("building %s with %s failed: %s", source.name, flags, r.stderr[-2000:])
            return False
        os.replace(tmp, out)  # atomic: concurrent builders never see half a library
        return True
    except (OSError, subprocess.SubprocessError) as e:
        log.debug("building %s failed: %s", source.name, e)
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(name: str) -> ctypes.CDLL | None:
    """The library built from kernels/`name`.c for this machine, or None."""
    with _LOCK:
        if name in _BUILT:
            return _BUILT[name]
        lib = _load(name) if ENABLED else None
        _BUILT[name] = lib
        return lib


def _load(name: str) -> ctypes.CDLL | None:
    cc, folder = compiler(), _usable_dir()
    if cc is None or folder is None:
        log.info("no C compiler or no writable folder: the %s kernel is not built "
                 "(portable path kept)", name)
        return None
    with resources.as_file(resources.files(__package__) / "kernels" / f"{name}.c") as src:
        source = Path(src)
        code = source.read_bytes()
        version = _version(cc)
        for flags in FLAG_SETS:
            key = hashlib.sha256(b"\0".join(
                [code, cc.encode(), version.encode(), " ".join(flags).encode(),
                 _cpu_signature().encode()])).hexdigest()[:16]
            path = folder / f"{name}-{key}.so"
            if path.exists() or _compile(cc, source, flags, path):
                try:
                    lib = ctypes.CDLL(str(path))
                except OSError as e:
                    log.debug("loading %s failed: %s", path, e)
                    continue
                log.info("native kernel %s: %s (%s)", name, path, " ".join(flags))
                return lib
    log.info("the %s kernel did not build: portable path kept", name)
    return None
