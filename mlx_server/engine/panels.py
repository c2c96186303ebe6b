"""Few-row float32 products against weights packed once as panels, on MLX's CPU backend.

A decode step multiplies 1-16 activation rows by every weight of the model, and on a CPU
that is bound by reading the weights. BLAS libraries run it as a general sgemm, which
either copies the weight into its blocked layout on every call or, through OpenBLAS's
direct kernel (cpu_head.py, cpu_blocked.py), reads it far below memory speed; none on
the package registries takes a weight prepacked once for few-row products. Here a
weight [V, K] is rewritten once, in place (no second copy), as V/16 panels of 16 rows
stored k-major (kernels/panel_head.c): every vector load of the weight feeds 16 outputs
of each activation row, with no horizontal sums.

The kernel sums each output over k in order, so a row's outputs do not depend on the
batch around it; their last bits differ from a BLAS's blocked sums. Needs a C compiler
(native.py) and AVX-512 (x86-64); callers keep their BLAS paths without them.

Only the output projection uses it (panel_head.py). The layers' 126 linears through it
(q/k/v and gate/up stacked: four host syncs a layer; prompts through a transposed copy)
took ~23 ms of a batch-8 step against ~51 ms, but served at 8 clients they were no
faster (55.83 / 53.49 / 51.02 against 56.86 / 51.12 / 54.76 tok/s, alternated) and
time to first token rose 5-15%, so they stay in MLX (cpu_blocked.py).
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import mlx.core as mx
import numpy as np

from . import native
from .cpu_head import MAX_ROWS  # a decode step's rows: the bound the BLAS path uses
from .thread_flag import ThreadFlag

PANEL = 16  # weight rows per panel: one 16-float vector per activation row and k
# Weights smaller than this (elements) run on the calling thread alone: handing half of
# them to another thread costs about as much as it saves.
SPLIT_MIN = 1 << 19
_CHUNK = 1024  # panels repacked per numpy copy (42 MB of scratch for K = 640)
_POOL: ThreadPoolExecutor | None = None
_KERNEL: Any = None


def threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


def kernel() -> Any:
    """`panel_matmul` from the built library, or None (no compiler, build failed)."""
    global _KERNEL
    if _KERNEL is None:
        lib = native.load("panel_head")
        if lib is None:
            return None
        fn = lib.panel_matmul
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_long,
                       ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_long]
        _KERNEL = fn
    return _KERNEL


def packable(weight: mx.array) -> bool:
    """A float32 [V, K] weight of whole panels whose memory numpy can rewrite."""
    if weight.ndim != 2 or weight.dtype != mx.float32:
        return False
    v, k = weight.shape
    return v % PANEL == 0 and v * k < 2**32 and np.asarray(weight).flags.writeable


def _transpose_panels(weight: np.ndarray, before: tuple[int, int]) -> None:
    """Transpose every 16-row block of `weight` in place, from `before` to its reverse."""
    v, _ = weight.shape
    blocks = weight.reshape(v // PANEL, *before)
    for i in range(0, v // PANEL, _CHUNK):
        chunk = blocks[i:i + _CHUNK]
        chunk.reshape(-1, before[1], before[0])[:] = chunk.transpose(0, 2, 1).copy()


def pack(weight: np.ndarray) -> None:
    """Rewrite a row-major [V, K] float32 weight as V/16 panels, in place."""
    _transpose_panels(weight, (PANEL, weight.shape[1]))


def unpack(weight: np.ndarray) -> None:
    """The inverse of `pack`."""
    _transpose_panels(weight, (weight.shape[1], PANEL))


def matmul(packed: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x @ W.T for a packed W [V, K] and any number of rows x [n, K], split over the cores."""
    global _POOL
    fn = kernel()
    xs = np.ascontiguousarray(x, dtype=np.float32)
    (n, k), vocab = xs.shape, packed.shape[0]
    out = np.empty((n, vocab), dtype=np.float32)
    panels = vocab // PANEL
    parts = threads() if packed.size >= SPLIT_MIN else 1
    parts = max(1, min(parts, panels))
    cuts = [panels * i // parts for i in range(parts + 1)]
    args = (xs.ctypes.data, n, packed.ctypes.data, k)
    if parts > 1 and _POOL is None:
        _POOL = ThreadPoolExecutor(threads() - 1, thread_name_prefix="mlx-server-panels")
    others = [_POOL.submit(fn, *args, cuts[i], cuts[i + 1], out.ctypes.data, vocab)
              for i in range(1, parts)] if parts > 1 else []
    try:
        fn(*args, cuts[0], cuts[1], out.ctypes.data, vocab)  # calls release the GIL
    finally:
        for f in others:
            f.result()  # xs and out stay alive until every part is done
    return out


def eager(packed: np.ndarray, x: mx.array) -> mx.array:
    """x @ W.T now, in the kernel (a host sync: x is evaluated first)."""
    mx.eval(x)
    rows = np.asarray(x).reshape(-1, x.shape[-1])
    return mx.array(matmul(packed, rows)).reshape(*x.shape[:-1], packed.shape[0])


# Set around a forward whose every row's output is read (a speculative verify step):
# the kernel then takes any number of rows, where the lazy form would be 2-3x slower.
EVERY_ROW = ThreadFlag()


def eager_rows(x: mx.array) -> bool:
    """Whether x's product should run now in the kernel: a decode step's few rows, or
    any rows inside `EVERY_ROW`."""
    return x.size // x.shape[-1] <= MAX_ROWS or bool(EVERY_ROW)  # more: lazy (panel_head)
