"""The output projection on CPU through the panel kernel (panels.py).

Gemma 3's output projection is 262,144 x 640 float32 (671 MB), read once per decode
step. Measured on this project's 2-core EPYC (random weight of that shape, two
threads): 1 row 31.1 -> 16.5 ms against OpenBLAS's gemv, 8 rows 57.5 -> 25.5 ms and
16 rows 86.3 -> 51.1 ms against cpu_head.py's direct-kernel blocks.

A prompt's rows get a lazy MLX product over the panels instead, which nothing evaluates
in normal serving (mlx-lm samples from the last token's own step); it is correct, if
slow (1.3-3.5x an sgemm over the rows), when something does: forwards that read every
row's logits (speculative verify steps) set `panels.EVERY_ROW` and take the kernel, as
fast as MLX's sgemm from 17 to 128 rows. The embedding lookup of a tied head reads the
panels with a gather, exactly.
"""

from __future__ import annotations

import logging

import mlx.core as mx
import numpy as np
from mlx import nn

from . import panels
from .class_swap import revert
from .cpu_head import head_and_embedding, language_model

log = logging.getLogger("mlx_server.engine")
PANEL = panels.PANEL


def _project(packed: np.ndarray, weight: mx.array, x: mx.array) -> mx.array:
    if panels.eager_rows(x):
        return panels.eager(packed, x)
    # a batched matmul over [V/16, K, 16] blocks: no transposed copy of the whole head
    v = weight.shape[0]
    out = x.reshape(1, -1, x.shape[-1]) @ weight.reshape(v // PANEL, -1, PANEL)
    return out.transpose(1, 0, 2).reshape(*x.shape[:-1], v)


class _PanelLinear(nn.Linear):
    """An untied output projection whose weight holds panels (MLX's matmul would read
    the panels as rows, so every call goes through `_project`)."""

    def __call__(self, x: mx.array) -> mx.array:
        y = _project(self._panels, self.weight, x)
        return y + self["bias"] if "bias" in self else y


class _PanelEmbedding(nn.Embedding):
    """A tied embedding whose weight holds panels: lookups gather each row's 16-strided
    elements, the output projection goes through `_project`."""

    def __call__(self, x: mx.array) -> mx.array:
        k = self.weight.shape[1]
        ids = x.astype(mx.uint32)
        base = (ids // PANEL) * (PANEL * k) + ids % PANEL
        idx = base[..., None] + mx.arange(0, PANEL * k, PANEL, dtype=mx.uint32)
        return mx.take(self.weight.reshape(-1), idx)

    def as_linear(self, x: mx.array) -> mx.array:
        return _project(self._panels, self.weight, x)


def install(model: nn.Module) -> bool:
    """Pack the output projection (lm_head or tied embedding) on CPU, float32, when the
    kernel builds. Returns whether it did; decode forwards then end in a host sync."""
    if mx.default_device() != mx.cpu:
        return False
    head, embed = head_and_embedding(model)
    if type(head) is nn.Linear:
        target, cls, name = head, _PanelLinear, "lm_head"
    elif head is None and type(embed) is nn.Embedding:
        target, cls, name = embed, _PanelEmbedding, "tied embedding"
    else:
        return False
    mx.eval(target.weight)
    if not panels.packable(target.weight) or panels.kernel() is None:
        return False
    target._panels = np.asarray(target.weight)
    panels.pack(target._panels)
    target.__class__ = cls
    log.info("output projection: panel kernel on %d threads (%s)", panels.threads(), name)
    return True


def installed(model: nn.Module) -> bool:
    return any(type(m) in (_PanelLinear, _PanelEmbedding)
               for _, m in language_model(model).named_modules())


def uninstall(model: nn.Module) -> int:
    """Undo `install` (for A/B measurement): rows back in place, classes restored."""
    n = 0
    for _, m in language_model(model).named_modules():
        if type(m) in (_PanelLinear, _PanelEmbedding):
            panels.unpack(m._panels)
            n += revert(m, type(m), forget=("_panels",))
    return n
