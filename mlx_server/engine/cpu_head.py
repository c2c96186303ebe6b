"""Decode-step output projections through BLAS directly on MLX's CPU backend.

MLX runs every CPU matmul as one sgemm. With one row, as in single-stream decoding, OpenBLAS's
sgemm packs the whole weight matrix on every call: Gemma 3's 262,144 x 640 output projection
takes ~70 ms that way and ~21 ms as a gemv over the same memory (2 pinned cores,
`bench/cuda/cpu_lmhead.py`), and it is most of a decode step. With 2-16 rows (a batched
decode step) one sgemm over the whole vocabulary took 75-110 ms and sgemms over blocks of
2,048 weight rows 85-91 ms inside a batch-8 engine step; here the blocks are small enough
for OpenBLAS's direct kernel (no copy of the weights, no thread pool) and split between
two threads: 61-64 ms (runs alternated in one process: `python -m bench.cpu_ab --off head`).
More rows (prefill) keep MLX's matmul.
"""

from __future__ import annotations

import ctypes
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..platform import find_openblas
from .class_swap import revert

log = logging.getLogger("mlx_server.engine")


_C_INT, _C_FLOAT, _C_PTR = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
_SIGNATURES = {
    "cblas_sgemv": [_C_INT] * 4 + [_C_FLOAT, _C_PTR, _C_INT, _C_PTR, _C_INT, _C_FLOAT,
                                   _C_PTR, _C_INT],
    "cblas_sgemm": [_C_INT] * 6 + [_C_FLOAT, _C_PTR, _C_INT, _C_PTR, _C_INT, _C_FLOAT,
                                   _C_PTR, _C_INT],
}


def _blas(name: str) -> Any:
    """The process's `name` (cblas_sgemv/sgemm): the BLAS MLX itself calls when OpenBLAS is
    preloaded (platform.py). numpy's own OpenBLAS would bring a second thread pool, and the
    two pools' spinning threads fight over the cores (measured: slower than no gemv at all)."""
    try:
        fn = getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError):
        # Not preloaded (MLX runs its bundled single-threaded BLAS): OpenBLAS beside it
        # has no second pool to fight.
        lib = find_openblas()
        try:
            fn = getattr(ctypes.CDLL(lib), name) if lib else None
        except (AttributeError, OSError):
            fn = None
        if fn is None:
            return None
    fn.restype = None
    fn.argtypes = _SIGNATURES[name]
    return fn


_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
# Up to this many rows (a decode step's batch) the projection goes through BLAS here.
MAX_ROWS = 16
# Multiply-adds per few-row sgemm block (rows x block x width): 8 x 128 x 640 on Gemma 3.
# OpenBLAS (0.3.21, SkylakeX/Cooperlake kernels) runs products under ~1M multiply-adds
# through its direct kernel, which reads the weights where they lie (the blocked path
# first copies every weight block); 2x and 0.5x this were slower or no faster.
BLOCK_WORK = 8 * 128 * 640
# The helper thread that multiplies the second half of the weight rows: the calls release
# the GIL, and each thread's sgemm runs single-threaded on its own core. SPLIT = False
# keeps every block on the calling thread (bench/cpu_ab.py measures with and without).
SPLIT = True
_HELPER: ThreadPoolExecutor | None = None


def block_rows(n: int, cols: int) -> int:
    """Weight rows per sgemm for an n-row product: a power of two, 32 at least."""
    return 1 << max(5, (BLOCK_WORK // (n * cols)).bit_length() - 1)


def _sgemm_rows(xp: int, n: int, cols: int, w: int, lo: int, hi: int, op: int,
                vocab: int, block: int) -> None:
    for i in range(lo, hi, block):
        m = min(block, hi - i)
        _SGEMM(_ROW_MAJOR, _NO_TRANS, _TRANS, n, m, cols, 1.0, xp, cols,
               w + 4 * i * cols, cols, 0.0, op + 4 * i, vocab)


def _project(weight: np.ndarray, x: mx.array) -> mx.array:
    """x @ weight.T for a few rows of x, straight from the weight's memory."""
    global _HELPER
    mx.eval(x)
    cols = weight.shape[1]
    xs = np.ascontiguousarray(np.asarray(x).reshape(-1, cols), dtype=np.float32)
    n, vocab = xs.shape[0], weight.shape[0]
    out = np.empty((n, vocab), dtype=np.float32)
    w, xp, op = weight.ctypes.data, xs.ctypes.data, out.ctypes.data
    if n == 1:
        _SGEMV(_ROW_MAJOR, _NO_TRANS, vocab, cols, 1.0, w, cols, xp, 1, 0.0, op, 1)
    elif not SPLIT:
        _sgemm_rows(xp, n, cols, w, 0, vocab, op, vocab, block_rows(n, cols))
    else:
        block = block_rows(n, cols)
        half = min(vocab, (vocab // 2 + block - 1) // block * block)
        if _HELPER is None:
            _HELPER = ThreadPoolExecutor(1, thread_name_prefix="mlx-server-head")
        other = _HELPER.submit(_sgemm_rows, xp, n, cols, w, half, vocab, op, vocab, block)
        try:
            _sgemm_rows(xp, n, cols, w, 0, half, op, vocab, block)
        finally:
            other.result()  # out and xs stay alive until the helper is done with them
    return mx.array(out).reshape(*x.shape[:-1], vocab)


_SGEMV = _blas("cblas_sgemv")
_SGEMM = _blas("cblas_sgemm")


def _few_rows(x: mx.array) -> bool:
    return (x.dtype == mx.float32 and x.size // x.shape[-1] <= MAX_ROWS
            and (_SGEMM is not None or x.size == x.shape[-1]))


class _GemvLinear(nn.Linear):
    """An `nn.Linear` whose decode-step calls go through `_project` (its class is swapped
    in place, so the parameter tree and the weights are the same objects)."""

    def __call__(self, x: mx.array) -> mx.array:
        if _few_rows(x):
            y = _project(self._np_weight, x)
            return y + self["bias"] if "bias" in self else y
        return super().__call__(x)


def language_model(model: Any) -> Any:
    """The text model inside a vision-language wrapper, or the model itself."""
    return getattr(model, "language_model", model)


def head_and_embedding(model: Any) -> tuple[Any, Any]:
    """The language model's `lm_head` and input embedding (None where it has none); with
    no `lm_head`, the embedding is the output projection too (tied)."""
    lm = language_model(model)
    head = lm.get("lm_head") if isinstance(lm, dict) else None
    return head, getattr(getattr(lm, "model", None), "embed_tokens", None)


def install(model: nn.Module) -> bool:
    """Route the output projection's decode-step calls through BLAS (`_project`), on CPU with float32 weights.

    Returns whether it did. Call after the model's final dtype is set: numpy views the
    weight's memory without copying it.
    """
    if mx.default_device() != mx.cpu or _SGEMV is None:
        return False
    head, embed = head_and_embedding(model)
    if type(head) is nn.Linear and head.weight.dtype == mx.float32:
        head._np_weight = np.asarray(head.weight)
        head.__class__ = _GemvLinear
        log.info("output projection: BLAS gemv/blocked sgemm for decode steps (%s)", "lm_head")
        return True
    if type(embed) is nn.Embedding and embed.weight.dtype == mx.float32:
        weight, linear = np.asarray(embed.weight), embed.as_linear

        def as_linear(x: mx.array) -> mx.array:
            return _project(weight, x) if _few_rows(x) else linear(x)

        embed.as_linear = as_linear  # an instance attribute: shadows the method
        log.info("output projection: BLAS gemv/blocked sgemm for decode steps (%s)",
                 "tied embedding")
        return True
    return False


def uninstall(model: nn.Module) -> int:
    """Undo `install` (for A/B measurement). Returns how many it restored."""
    n = revert(language_model(model), _GemvLinear, forget=("_np_weight",))
    embed = head_and_embedding(model)[1]
    if embed is not None and "as_linear" in vars(embed):
        del vars(embed)["as_linear"]
        n += 1
    return n
