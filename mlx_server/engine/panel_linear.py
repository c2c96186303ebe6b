"""The layers' linears on CPU through the panel kernel (panels.py), siblings as one product.

In a decode step each linear's few rows go through the kernel: a host sync per call, so
the projections of one activation (q/k/v, gate/up) share one stacked weight and one
call, leaving four syncs per transformer layer (q/k/v, o, gate/up, down). Gemma 3 270M,
all 126 linears of a batch-8 step: ~23 ms in the kernel against ~51 ms through
cpu_blocked.py, and the step as a whole 5.7% and 10.2% faster in two runs of steps
alternated within one batch (the syncs give back the rest).

A prompt's rows (more than `panels.MAX_ROWS`) stay lazy in MLX: the panels are
transposed back to rows (a temporary copy of the weight) for MLX's own matmul.
"""

from __future__ import annotations

import logging
from typing import Any

import mlx.core as mx
import numpy as np
from mlx import nn

from . import panels
from .class_swap import revert
from .cpu_head import language_model

log = logging.getLogger("mlx_server.engine")

GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class _Stack:
    """One packed weight for one or more linears of the same input, and the last output."""

    def __init__(self, members: list[nn.Linear]) -> None:
        self.members = members
        self.bounds: list[tuple[int, int]] = []
        start = 0
        for m in members:
            self.bounds.append((start, start + m.weight.shape[0]))
            start += m.weight.shape[0]
        biased = "bias" in members[0]
        if len(members) == 1:
            self.weight = members[0].weight
            self.bias = members[0].bias if biased else None
        else:
            self.weight = mx.concatenate([m.weight for m in members], axis=0)
            self.bias = mx.concatenate([m.bias for m in members]) if biased else None
            mx.eval(self.weight, [] if self.bias is None else self.bias)
            for m, (a, b) in zip(members, self.bounds):
                m.weight = self.weight[a:b]  # a view of the stack: no second copy
                if biased:
                    m.bias = self.bias[a:b]
        self.packed = np.asarray(self.weight)
        self.x: mx.array | None = None
        self.out: mx.array | None = None
        self.served: set[int] = set()

    def output(self, i: int, x: mx.array) -> mx.array:
        if self.x is not x or i in self.served:
            self.out = (panels.eager(self.packed, x) if panels.few_rows(x)
                        else panels.lazy_product(self.weight, x))
            if self.bias is not None:
                self.out = self.out + self.bias
            self.x, self.served = x, set()
        if len(self.members) == 1:
            self.x = None
            return self.out
        self.served.add(i)
        a, b = self.bounds[i]
        out = self.out[..., a:b]
        if len(self.served) == len(self.members):  # all served: hold no activations
            self.x = self.out = None
        return out


class PanelLinear(nn.Linear):
    """An nn.Linear whose weight is (a view of) packed panels: every call goes through
    its stack, never MLX's matmul on the weight as rows."""

    def __call__(self, x: mx.array) -> mx.array:
        stack, i = self.__dict__["_panel_stack"]
        return stack.output(i, x)


def _eligible(ms: list[Any]) -> bool:
    if not all(type(m) is nn.Linear for m in ms):
        return False  # quantized, LoRA-wrapped, already swapped or missing: leave alone
    k, biased = ms[0].weight.shape[1], "bias" in ms[0]
    return all(m.weight.shape[1] == k and ("bias" in m) == biased and panels.packable(m.weight)
               for m in ms)


def _swap(ms: list[nn.Linear]) -> None:
    stack = _Stack(ms)
    panels.pack(stack.packed)
    for i, m in enumerate(ms):
        m.__class__ = PanelLinear
        object.__setattr__(m, "_panel_stack", (stack, i))  # not a parameter


def install(model: nn.Module) -> int:
    """Pack the language model's float32 linears on CPU when the kernel
    builds; returns how many linears now run through it."""
    if mx.default_device() != mx.cpu or panels.kernel() is None:
        return 0
    lm = language_model(model)
    n = 0
    for _, parent in lm.named_modules():
        for names in GROUPS:
            ms = [parent.get(name) for name in names]  # nn.Module is a dict of its children
            if _eligible(ms):
                _swap(ms)
                n += len(ms)
    for _, m in lm.named_modules():
        if _eligible([m]):
            _swap([m])
            n += 1
    if n:
        mx.clear_cache()  # the stacked groups' former weights
        log.info("layer linears: panel kernel for decode steps (%d linears)", n)
    return n


def uninstall(model: nn.Module) -> int:
    """Undo `install` (for A/B measurement): rows back in place, classes restored.
    Stacked members keep their weights as views of the stack."""
    seen = set()
    for _, m in language_model(model).named_modules():
        if type(m) is PanelLinear:
            stack = m.__dict__["_panel_stack"][0]
            if id(stack) not in seen:
                seen.add(id(stack))
                panels.unpack(stack.packed)
    return revert(language_model(model), PanelLinear, forget=("_panel_stack",))
