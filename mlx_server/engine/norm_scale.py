"""Gemma-family RMSNorms with their (1 + weight) scale computed once, not every call.

Gemma's RMSNorm multiplies by `1 + weight`, and mlx-lm computes that sum on every call:
one more op per norm, six norms a layer in Gemma 3, about a fifth of a decode step's
kernels. For a small model on a GPU a decode step is bound by how many kernels it
launches, not by their work (bench/cuda/RESULTS.md), so these launches cost real time.
The scale is kept beside the weight it came from and rebuilt if the weight is replaced,
so results are bit-identical and weight updates still apply.
"""

from __future__ import annotations

import logging
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .class_swap import ClassSwap

log = logging.getLogger("mlx_server.engine")


def _scale(module: Any) -> mx.array:
    w = module.weight
    cached = module.__dict__.get("_offset_scale")
    if cached is None or cached[0] is not w:
        cached = (w, 1.0 + w)
        # object.__setattr__: nn.Module would file an array (or a tuple) as a parameter.
        object.__setattr__(module, "_offset_scale", cached)
    return cached[1]


def _call(self: Any, x: mx.array) -> mx.array:
    return mx.fast.rms_norm(x, _scale(self), self.eps)


# The exact body this replaces; a class whose __call__ says anything else is left alone.
_SWAP = ClassSwap("return mx.fast.rms_norm(x, 1.0 + self.weight, self.eps)", _call)


def install(model: nn.Module) -> int:
    """Swap every offset-RMSNorm in `model` for one that caches its scale; returns how many."""
    # Scales are built at load, not inside the first request's step.
    n = _SWAP.install(model, prepare=lambda m: mx.eval(_scale(m)))
    if n:
        log.info("offset RMSNorm: (1 + weight) precomputed in %d norms", n)
    return n


def uninstall(model: nn.Module) -> int:
    """Undo `install` (benchmarks measure with and without); returns how many norms reverted."""
    return _SWAP.uninstall(model, forget=("_offset_scale",))
