"""Gemma's MLP gate, gelu(gate) * up, as one compiled kernel on a GPU.

mlx-lm's Gemma MLP runs `nn.gelu_approx` (itself compiled into one kernel) and then the
multiply by `up` as a second kernel. Compiling the two together leaves one elementwise
kernel a layer; a small model's decode step on a GPU is bound by how many kernels it
launches (bench/cuda/RESULTS.md). Fused kernels keep every intermediate in the arrays'
dtype, so on CPU results are bit-identical (tests); on a GPU only checked together with
proj_fuse.py (last-bit differences, RESULTS.md session 5). Only a class whose `__call__` is exactly mlx-lm's
one line is swapped (class_swap.py).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import mlx.core as mx
from mlx import nn
from mlx.nn.layers.activations import gelu_approx  # MLX's own, even where cpu_ops swapped nn's

from .class_swap import ClassSwap

log = logging.getLogger("mlx_server.engine")


@partial(mx.compile, shapeless=True)
def gelu_mul(gate: mx.array, up: mx.array) -> mx.array:
    return gelu_approx(gate) * up


def _call(self: Any, x: mx.array) -> mx.array:
    return self.down_proj(gelu_mul(self.gate_proj(x), self.up_proj(x)))


_SWAP = ClassSwap("return self.down_proj(nn.gelu_approx(self.gate_proj(x)) * self.up_proj(x))",
                  _call)


def install(model: nn.Module, on_cpu: bool = False) -> int:
    """Swap every Gemma MLP for one with a fused gate; returns how many.

    Off on MLX's CPU backend unless `on_cpu`: there cpu_ops.py runs large gelus through
    numpy, and launches are not what a CPU step waits on.
    """
    if mx.default_device() == mx.cpu and not on_cpu:
        return 0
    n = _SWAP.install(model)
    if n:
        log.info("Gemma MLP: gelu(gate) * up fused into one kernel in %d layers", n)
    return n


def uninstall(model: nn.Module) -> int:
    """Undo `install`; returns how many MLPs reverted."""
    return _SWAP.uninstall(model)
