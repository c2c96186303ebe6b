"""Single-row output projections through a BLAS gemv on MLX's CPU backend.

MLX runs every CPU matmul as an sgemm. With one row, as in single-stream decoding, OpenBLAS's
sgemm packs the whole weight matrix on every call: Gemma 3's 262,144 x 640 output projection
takes ~70 ms that way and ~21 ms as a gemv over the same memory (2 pinned cores,
`bench/cuda/cpu_lmhead.py`), and it is most of a decode step. Batches of two or more rows
keep MLX's sgemm, which is as fast as a gemv loop or faster there.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..platform import find_openblas

log = logging.getLogger("mlx_server.engine")


def _blas() -> Any:
    """The process's `cblas_sgemv`: the BLAS MLX itself calls when OpenBLAS is preloaded
    (platform.py). numpy's own OpenBLAS would bring a second thread pool, and the two
    pools' spinning threads fight over the cores (measured: slower than no gemv at all)."""
    try:
        fn = ctypes.CDLL(None).cblas_sgemv
    except (AttributeError, OSError):
        # Not preloaded (MLX runs its bundled single-threaded BLAS): OpenBLAS's gemv
        # beside it has no second pool to fight.
        lib = find_openblas()
        try:
            fn = ctypes.CDLL(lib).cblas_sgemv if lib else None
        except (AttributeError, OSError):
            fn = None
        if fn is None:
            return None
    fn.restype = None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_float,
                   ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                   ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    return fn


_ROW_MAJOR, _NO_TRANS = 101, 111


def _gemv(weight: np.ndarray, x: mx.array) -> mx.array:
    mx.eval(x)
    row = np.ascontiguousarray(np.asarray(x).reshape(-1), dtype=np.float32)
    out = np.empty(weight.shape[0], dtype=np.float32)
    rows, cols = weight.shape
    _SGEMV(_ROW_MAJOR, _NO_TRANS, rows, cols, 1.0, weight.ctypes.data, cols,
           row.ctypes.data, 1, 0.0, out.ctypes.data, 1)
    return mx.array(out).reshape(*x.shape[:-1], rows)


_SGEMV = _blas()


def _one_row(x: mx.array) -> bool:
    return x.dtype == mx.float32 and x.size == x.shape[-1]


class _GemvLinear(nn.Linear):
    """An `nn.Linear` whose one-row calls use gemv (its class is swapped in place, so the
    parameter tree and the weights are the same objects)."""

    def __call__(self, x: mx.array) -> mx.array:
        if _one_row(x):
            y = _gemv(self._np_weight, x)
            return y + self["bias"] if "bias" in self else y
        return super().__call__(x)


def _language_model(model: Any) -> Any:
    return getattr(model, "language_model", model)


def install(model: nn.Module) -> bool:
    """Route the output projection's one-row calls to gemv, on CPU with float32 weights.

    Returns whether it did. Call after the model's final dtype is set: numpy views the
    weight's memory without copying it.
    """
    if mx.default_device() != mx.cpu or _SGEMV is None:
        return False
    lm = _language_model(model)
    head = lm.get("lm_head") if isinstance(lm, dict) else None
    if type(head) is nn.Linear and head.weight.dtype == mx.float32:
        head._np_weight = np.asarray(head.weight)
        head.__class__ = _GemvLinear
        log.info("output projection: gemv for one-row steps (%s)", "lm_head")
        return True
    embed = getattr(getattr(lm, "model", None), "embed_tokens", None)
    if type(embed) is nn.Embedding and embed.weight.dtype == mx.float32:
        weight, linear = np.asarray(embed.weight), embed.as_linear

        def as_linear(x: mx.array) -> mx.array:
            return _gemv(weight, x) if _one_row(x) else linear(x)

        embed.as_linear = as_linear  # an instance attribute: shadows the method
        log.info("output projection: gemv for one-row steps (%s)", "tied embedding")
        return True
    return False
