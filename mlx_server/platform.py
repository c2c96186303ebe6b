"""Making MLX fast on the machine it runs on, and saying what it runs on.

On Linux the `mlx-cpu` wheel links a reference BLAS that is ~16x slower than
OpenBLAS for the float32 matmuls CPU decoding spends its time in. The dynamic linker
lets a preloaded OpenBLAS interpose `cblas_sgemm`, but only if it is set before the
process starts, so the CLI re-executes itself once with LD_PRELOAD set.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
_REEXEC_MARK = "_MLX_SERVER_BLAS_REEXEC"


def find_openblas() -> str | None:
    env = os.environ.get("MLX_SERVER_BLAS")
    if env:
        return env if Path(env).exists() else None
    return next((p for p in OPENBLAS_CANDIDATES if Path(p).exists()), None)


def blas_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` with an optimized BLAS preloaded where Linux has one (for child processes too)."""
    env = dict(os.environ if env is None else env)
    lib = find_openblas() if sys.platform.startswith("linux") else None
    if lib and lib not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    return env


def ensure_fast_blas(argv: list[str], module: str = "mlx_server") -> None:
    """Re-exec this process (`python -m module argv...`) with OpenBLAS preloaded, once,
    when that helps."""
    if not sys.platform.startswith("linux") or os.environ.get(_REEXEC_MARK):
        return
    if os.environ.get("MLX_SERVER_NO_BLAS_REEXEC") == "1":
        return
    env = blas_env()
    if env.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD"):
        return  # nothing to add: no OpenBLAS here, or already preloaded
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 4 << 20


def bound_malloc() -> bool:
    """Return freed large buffers to the OS (Linux/glibc), so resident memory follows use.

    MLX's CPU backend allocates with malloc. glibc raises its mmap threshold each time a
    large mmapped block is freed (up to 32 MiB), after which blocks that size come from
    heap arenas that are only trimmed from the top: resident memory ratchets up to the
    largest mix of buffers ever live (a soak saw one-off 40-60 MiB steps). A fixed
    threshold turns the adjustment off. MLX_SERVER_MMAP_THRESHOLD (bytes; 0 = leave
    glibc alone) overrides it.
    """
    value = int(os.environ.get("MLX_SERVER_MMAP_THRESHOLD", MMAP_THRESHOLD))
    if value <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # not glibc (musl has no mallopt)
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, value) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, 2 * value) == 1


def loaded_blas() -> str:
    """Which BLAS this process actually mapped, read from /proc (Linux) or assumed (macOS)."""
    if sys.platform == "darwin":
        return "Accelerate"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    if "openblas" in maps:
        return "OpenBLAS (preloaded)"
    if "mlx_cpu.libs/libblas" in maps or "libblas" in maps:
        return "reference BLAS bundled with mlx (slow; apt-get install libopenblas0-pthread)"
    return "none loaded yet"


def auto_gguf_dtype() -> str:
    """float32 on CPU: MLX's quantized and bf16 CPU kernels are far slower than f32 GEMM."""
    import mlx.core as mx

    return "float16" if mx.metal.is_available() else "float32"
