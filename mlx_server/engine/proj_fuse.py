"""Sibling projections of one input (q/k/v, gate/up) run as one matmul on a GPU.

For a small model on a GPU a decode step is bound by how many kernels the host encodes
and launches, not by their work (bench/cuda/RESULTS.md): q, k and v are three matmuls
of the same activation, gate and up two more. Each group gets one weight, the members'
rows stacked; the first member called with an activation runs the one matmul and the
others return their columns of it when called with that same array (identity, not
value). Models need no change and the parameter tree keeps its names: each member's
weight becomes a view of the stacked one (no second copy), and a member whose weight was
replaced (load_weights, update) has its group restacked on the next call.

Not bit-identical in general: a wider matmul may get another kernel or blocking, so the
last bits can change, as they do when a batch changes size (CPU: identical for one row,
~3e-6 apart over 4x64 rows in float32; H100 bf16: bench/cuda/RESULTS.md, session 5).
"""

from __future__ import annotations

import logging
from typing import Any

import mlx.core as mx
from mlx import nn

from .class_swap import revert

log = logging.getLogger("mlx_server.engine")

GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class _Group:
    """One stacked weight (and bias) for `members`, and the last activation's output."""

    def __init__(self, members: list[nn.Linear]) -> None:
        self.members = members
        self.bounds: list[tuple[int, int]] = []
        start = 0
        for m in members:
            self.bounds.append((start, start + m.weight.shape[0]))
            start += m.weight.shape[0]
        self.views: tuple[mx.array, ...] = ()
        self.weight: mx.array | None = None
        self.bias: mx.array | None = None
        self.x: mx.array | None = None
        self.out: mx.array | None = None
        self.served: set[int] = set()

    def stack(self) -> None:
        if self.views and all(m.weight is v for m, v in zip(self.members, self.views)):
            return
        self.weight = mx.concatenate([m.weight for m in self.members], axis=0)
        has_bias = "bias" in self.members[0]
        self.bias = mx.concatenate([m.bias for m in self.members]) if has_bias else None
        for m, (a, b) in zip(self.members, self.bounds):
            m.weight = self.weight[a:b]  # a view of the stacked buffer: no second copy
            if has_bias:
                m.bias = self.bias[a:b]
        self.views = tuple(m.weight for m in self.members)
        mx.eval(self.weight, self.views, [] if self.bias is None else self.bias)

    def output(self, i: int, x: mx.array) -> mx.array:
        if self.x is not x or i in self.served:
            self.stack()
            assert self.weight is not None
            w = self.weight.T
            self.out = x @ w if self.bias is None else mx.addmm(self.bias, x, w)
            self.x, self.served = x, set()
        self.served.add(i)
        a, b = self.bounds[i]
        out = self.out[..., a:b]
        if len(self.served) == len(self.members):  # all served: hold no activations
            self.x = self.out = None
        return out


def _call(self: Any, x: mx.array) -> mx.array:
    group, i = self.__dict__["_fused_group"]
    return group.output(i, x)


class FusedLinear(nn.Linear):
    """An nn.Linear whose output comes from its group's one matmul."""

    __call__ = _call


def _members(parent: nn.Module, names: tuple[str, ...]) -> list[nn.Linear] | None:
    ms = [parent.get(n) for n in names]  # nn.Module is a dict of its children
    if not all(type(m) is nn.Linear for m in ms):
        return None  # quantized, LoRA-wrapped, already fused or missing: leave alone
    first = ms[0]
    same = all(m.weight.shape[1] == first.weight.shape[1] and m.weight.dtype == first.weight.dtype
               and ("bias" in m) == ("bias" in first) for m in ms)
    return ms if same else None  # type: ignore[return-value]


def install(model: nn.Module, on_cpu: bool = False) -> int:
    """Fuse every q/k/v and gate/up group of plain Linears; returns how many groups.

    Off on MLX's CPU backend unless `on_cpu`: there a decode step is bound by the
    matmuls' memory traffic, not by launches, and fusing measured no gain.
    """
    if mx.default_device() == mx.cpu and not on_cpu:
        return 0
    n = 0
    for _, parent in model.named_modules():
        for names in GROUPS:
            ms = _members(parent, names)
            if ms is None:
                continue
            group = _Group(ms)
            group.stack()
            for i, m in enumerate(ms):
                m.__class__ = FusedLinear
                object.__setattr__(m, "_fused_group", (group, i))  # not a parameter
            n += 1
    if n:
        log.info("sibling projections: %d groups run as one matmul each", n)
    return n


def uninstall(model: nn.Module) -> int:
    """Undo `install` (benchmarks measure with and without); returns how many Linears reverted."""
    return revert(model, FusedLinear, forget=("_fused_group",))
