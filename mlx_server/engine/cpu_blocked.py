"""Few-row linear layers on MLX's CPU backend as blocked products over two streams.

A decode step multiplies 1-8 activation rows by each weight. MLX runs that as one sgemm,
and OpenBLAS's sgemm copies the whole weight into its blocked layout on every call
before using it once (in a batch-8 Gemma 3 step, that copy was 18% of CPU samples
against 8% for the multiply). Here the weight is viewed, without a copy, as blocks of
rows small enough (rows x block x width <= ~650k multiply-adds) for OpenBLAS's direct
kernel, which reads the weight where it lies; MLX's batched matmul runs one sgemm per
block. Weights of a million elements or more are split in two halves on two CPU streams,
so both cores work without OpenBLAS's thread pool (whose idle threads spin).

Gemma 3 270M's 126 layer linears in a chain (random float32 weights, alternated runs):
8 rows 66-68 ms -> 52-57 ms, 4 rows 54-61 -> 45, 1 row 44 -> 36; 16 rows got slower (78
-> 107 ms), so only up to MAX_ROWS rows take this path. Results match MLX's matmul to
float32 rounding (the sums are the same, accumulated in another order).
"""

from __future__ import annotations

import ctypes
import logging
import threading

import mlx.core as mx
from mlx import nn

from .class_swap import revert
from .cpu_head import language_model

log = logging.getLogger("mlx_server.engine")

MAX_ROWS = 8
# Multiply-adds per block (rows x block rows x width): 8 x 128 x 640 on Gemma 3.
BLOCK_WORK = 8 * 128 * 640
MIN_BLOCK = 32
# From this many weight elements the blocks are split between two streams.
SPLIT_MIN = 1 << 20

_local = threading.local()  # MLX streams belong to the thread that made them


def _mlx_calls_openblas() -> bool:
    """Whether MLX's sgemm is OpenBLAS's: preloaded, its symbols are the process's own.
    The block size above is OpenBLAS's direct-kernel bound; with MLX's bundled reference
    BLAS or another library this path was not measured, so it stays off."""
    try:
        ctypes.CDLL(None).openblas_get_config  # noqa: B018 - presence is the answer
    except (AttributeError, OSError):
        return False
    return True


OPENBLAS = _mlx_calls_openblas()


def _second_stream() -> mx.Stream:
    s = getattr(_local, "stream", None)
    if s is None:
        s = _local.stream = mx.new_stream(mx.cpu)
    return s


def block_rows(rows: int, out: int, width: int) -> int:
    """Weight rows per block: the largest power of two within BLOCK_WORK that divides
    `out` (so the weight reshapes into whole blocks); 0 when that is under MIN_BLOCK."""
    target = 1 << max(0, (BLOCK_WORK // (rows * width)).bit_length() - 1)
    block = min(target, out & -out)
    return block if block >= MIN_BLOCK else 0


def blocked_matmul(x: mx.array, weight: mx.array) -> mx.array | None:
    """x @ weight.T through per-block sgemms, or None where this path does not apply."""
    width = x.shape[-1]
    rows = x.size // width
    out = weight.shape[0]
    if rows > MAX_ROWS or x.dtype != mx.float32 or weight.dtype != mx.float32:
        return None
    block = block_rows(rows, out, width)
    if not block:
        return None
    groups = out // block
    x2 = x.reshape(1, rows, width)
    w3 = weight.reshape(groups, block, width).transpose(0, 2, 1)  # views, no copies
    if weight.size >= SPLIT_MIN and groups >= 2:
        half = groups // 2
        y = mx.concatenate([mx.matmul(x2, w3[:half]),
                            mx.matmul(x2, w3[half:], stream=_second_stream())])
    else:
        y = mx.matmul(x2, w3)
    # (groups, rows, block) -> (rows, out)
    return y.transpose(1, 0, 2).reshape(*x.shape[:-1], out)


class _BlockedLinear(nn.Linear):
    """An `nn.Linear` whose few-row calls go through `blocked_matmul` (its class is
    swapped in place: the parameter tree and the weights stay the same objects)."""

    def __call__(self, x: mx.array) -> mx.array:
        y = blocked_matmul(x, self.weight)
        if y is None:
            return super().__call__(x)
        return y + self["bias"] if "bias" in self else y


def install(model: nn.Module) -> int:
    """Swap the language model's plain float32 `nn.Linear` layers to the blocked path, on
    CPU with OpenBLAS preloaded (platform.py does that). Returns how many it swapped."""
    if mx.default_device() != mx.cpu or not OPENBLAS:
        return 0
    n = 0
    for _, m in language_model(model).named_modules():
        if type(m) is nn.Linear and m.weight.dtype == mx.float32:
            m.__class__ = _BlockedLinear
            n += 1
    if n:
        log.info("few-row linears: blocked sgemms on two CPU streams (%d layers)", n)
    return n


def uninstall(model: nn.Module) -> int:
    """Undo `install` (for A/B measurement). Returns how many it restored."""
    return revert(language_model(model), _BlockedLinear)
