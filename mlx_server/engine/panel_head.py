"""The output projection on CPU as a panel product: the weight read once, at memory speed.

A decode step multiplies 1-16 activation rows by the output projection, which on Gemma 3
is 262,144 x 640 float32 (671 MB), read once per step. BLAS libraries run that as a
general sgemm, which either copies the weight into its blocked layout on every call or
(cpu_head.py's direct-kernel blocks) reads it at ~12 GB/s; none on the package registries
takes a weight prepacked once for few-row products. Here the weight is rewritten at load,
in place (no second copy), as panels of 16 rows, each stored k-major (kernels/
panel_head.c), so every weight load feeds 16 outputs of every activation row with no
horizontal sums: measured on this project's 2-core EPYC (random 262,144 x 640 weight,
two threads), 1 row 31.1 -> 16.5 ms (against OpenBLAS's gemv), 8 rows 57.5 -> 25.5 ms,
16 rows 86.3 -> 51.1 ms against cpu_head.py's blocks.

Only a decode step's few rows (up to MAX_ROWS) run in the kernel, eagerly; a prompt's
rows get a lazy MLX product over the panels, which nothing evaluates in normal serving.
The kernel sums each output over k in order, so a row's logits are the same whatever the
batch around it. Their last bits differ from a BLAS's blocked sums (~1e-5 on Gemma's
logits). The embedding lookup of a tied head reads the panels with a gather, exactly.
Needs a C compiler (native.py); without one, cpu_head.py's BLAS path is used.
"""

from __future__ import annotations

import ctypes
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import mlx.core as mx
import numpy as np
from mlx import nn

from . import native
from .class_swap import revert
from .cpu_head import language_model

log = logging.getLogger("mlx_server.engine")

# Up to this many rows (a decode step's batch) the product runs eagerly in the kernel.
MAX_ROWS = 16
PANEL = 16  # weight rows per panel: one 16-float vector per activation row and k
_CHUNK = 1024  # panels repacked per numpy copy at load (42 MB scratch for K = 640)
_POOL: ThreadPoolExecutor | None = None
_KERNEL: Any = None


def _threads() -> int:
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


def pack(weight: np.ndarray) -> None:
    """Rewrite a row-major [V, K] float32 weight as V/16 panels, in place."""
    v, k = weight.shape
    panels = weight.reshape(v // PANEL, PANEL, k)
    for i in range(0, v // PANEL, _CHUNK):
        block = panels[i:i + _CHUNK]
        block.reshape(-1, k, PANEL)[:] = block.transpose(0, 2, 1).copy()


def unpack(weight: np.ndarray) -> None:
    """The inverse of `pack`."""
    v, k = weight.shape
    panels = weight.reshape(v // PANEL, k, PANEL)
    for i in range(0, v // PANEL, _CHUNK):
        block = panels[i:i + _CHUNK]
        block.reshape(-1, PANEL, k)[:] = block.transpose(0, 2, 1).copy()


def matmul(packed: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x @ W.T for a packed W [V, K] and any number of rows x [n, K], split over the cores."""
    global _POOL
    fn = kernel()
    xs = np.ascontiguousarray(x, dtype=np.float32)
    (n, k), vocab = xs.shape, packed.shape[0]
    out = np.empty((n, vocab), dtype=np.float32)
    panels, parts = vocab // PANEL, _threads()
    cuts = [panels * i // parts for i in range(parts + 1)]
    args = (xs.ctypes.data, n, packed.ctypes.data, k)
    if parts > 1 and _POOL is None:
        _POOL = ThreadPoolExecutor(parts - 1, thread_name_prefix="mlx-server-head")
    others = [_POOL.submit(fn, *args, cuts[i], cuts[i + 1], out.ctypes.data, vocab)
              for i in range(1, parts)] if parts > 1 else []
    try:
        fn(*args, cuts[0], cuts[1], out.ctypes.data, vocab)  # calls release the GIL
    finally:
        for f in others:
            f.result()  # xs and out stay alive until every part is done
    return out


def _project(packed: np.ndarray, weight: mx.array, x: mx.array) -> mx.array:
    """x @ W.T: through the kernel for a decode step's few rows; lazily in MLX for more.

    A prompt's forward pass is built for its caches, and its logits are never evaluated
    (mlx-lm samples from the last token's own step), so an eager product over every
    prompt row would be wasted work. The lazy form reads the panels as a batched
    matmul ([V/16, K, 16] blocks), correct if something does evaluate it (echoed
    prompt log-probabilities).
    """
    vocab = packed.shape[0]
    if x.size // x.shape[-1] > MAX_ROWS:
        panels = weight.reshape(vocab // PANEL, -1, PANEL)
        rows = x.reshape(1, -1, x.shape[-1])
        out = (rows @ panels).transpose(1, 0, 2)  # [rows, V/16, 16]
        return out.reshape(*x.shape[:-1], vocab)
    mx.eval(x)
    rows = np.asarray(x).reshape(-1, x.shape[-1])
    return mx.array(matmul(packed, rows)).reshape(*x.shape[:-1], vocab)


class _PanelLinear(nn.Linear):
    """An untied output projection whose weight holds panels (every call goes through
    the kernel: MLX's matmul would read the panels as rows)."""

    def __call__(self, x: mx.array) -> mx.array:
        y = _project(self._panels, self.weight, x)
        return y + self["bias"] if "bias" in self else y


class _PanelEmbedding(nn.Embedding):
    """A tied embedding whose weight holds panels: lookups gather each row's 16-strided
    elements, the output projection goes through the kernel."""

    def __call__(self, x: mx.array) -> mx.array:
        k = self.weight.shape[1]
        ids = x.astype(mx.uint32)
        base = (ids // PANEL) * (PANEL * k) + ids % PANEL
        idx = base[..., None] + mx.arange(0, PANEL * k, PANEL, dtype=mx.uint32)
        return mx.take(self.weight.reshape(-1), idx)

    def as_linear(self, x: mx.array) -> mx.array:
        return _project(self._panels, self.weight, x)


def _eligible(weight: mx.array) -> bool:
    v, k = weight.shape
    return (weight.dtype == mx.float32 and v % PANEL == 0 and v * k < 2**32
            and np.asarray(weight).flags.writeable)


def install(model: nn.Module) -> bool:
    """Pack the output projection (lm_head or tied embedding) on CPU, float32, when the
    kernel builds. Returns whether it did; the forward then ends in a host sync."""
    if mx.default_device() != mx.cpu:
        return False
    lm = language_model(model)
    head = lm.get("lm_head") if isinstance(lm, dict) else None
    embed = getattr(getattr(lm, "model", None), "embed_tokens", None)
    if type(head) is nn.Linear:
        target, cls, name = head, _PanelLinear, "lm_head"
    elif head is None and type(embed) is nn.Embedding:
        target, cls, name = embed, _PanelEmbedding, "tied embedding"
    else:
        return False
    if not _eligible(target.weight) or kernel() is None:
        return False
    mx.eval(target.weight)
    target._panels = np.asarray(target.weight)
    pack(target._panels)
    target.__class__ = cls
    log.info("output projection: panel kernel on %d threads (%s)", _threads(), name)
    return True


def installed(model: nn.Module) -> bool:
    return any(type(m) in (_PanelLinear, _PanelEmbedding)
               for _, m in language_model(model).named_modules())


def uninstall(model: nn.Module) -> int:
    """Undo `install` (for A/B measurement): rows back in place, classes restored."""
    n = 0
    for _, m in language_model(model).named_modules():
        if type(m) in (_PanelLinear, _PanelEmbedding):
            unpack(m._panels)
            n += revert(m, type(m), forget=("_panels",))
    return n
