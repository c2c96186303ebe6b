"""Transcendental-heavy steps through numpy on MLX's CPU backend (x86).

The `mlx-cpu` wheel is built for baseline x86-64, so its exp/tanh run as scalar code:
~16 ns per float32 element for `exp`, ~34 ns for `gelu_approx`, where numpy's runtime-
dispatched SIMD loops take ~0.5-1 ns. In Gemma 3 270M that was most of a prompt's
non-matmul time (measured on this project's 2-core EPYC, OpenBLAS preloaded):

- the MLP's `gelu_approx` over [944, 2048]: 64 ms a layer through MLX, 3.9 ms here;
- the attention softmax over [8, 4, 118, 118] inside `scaled_dot_product_attention`;
- mlx-lm's per-step `logsumexp` over the vocabulary: [8, 262144] 32 ms, 7 ms here.

Each replacement evaluates its input first (numpy needs the values), so it is used only
where the tensor is large enough for the speed-up to beat losing MLX's lazy overlap;
smaller calls, other dtypes and other devices keep MLX's own functions. The math is the
same; results differ from MLX's in the last bits only (tests/engine/test_cpu_ops.py).
Matmuls stay in MLX: numpy's own BLAS would bring a second thread pool (see cpu_head.py).
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import step_logprobs
from .cpu_head import language_model

log = logging.getLogger("mlx_server.engine")

# Below these sizes (elements) MLX's own kernel is cheaper than a sync plus numpy.
MIN_ACTIVATION = 1 << 15
MIN_SOFTMAX = 1 << 15
MIN_LOGSUMEXP = 1 << 17

_SQRT_2_PI = np.float32(math.sqrt(2 / math.pi))
_NEG = np.finfo(np.float32).min  # MLX masks with the dtype's lowest value, not -inf

_mlx_gelu_approx = nn.gelu_approx
_installed: dict[str, Any] = {}


def _np(x: mx.array) -> np.ndarray:
    mx.eval(x)
    return np.array(x, copy=False)


def _eligible(x: mx.array, min_size: int) -> bool:
    return x.dtype == mx.float32 and x.size >= min_size and mx.default_device() == mx.cpu


def gelu_approx(x: mx.array) -> mx.array:
    """0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as `mlx.nn.gelu_approx`."""
    if not _eligible(x, MIN_ACTIVATION):
        return _mlx_gelu_approx(x)
    a = _np(x)
    y = a * a
    y *= np.float32(0.044715)
    y += 1
    y *= a
    y *= _SQRT_2_PI
    np.tanh(y, out=y)
    y += 1
    y *= a
    y *= np.float32(0.5)
    return mx.array(y)


def logsumexp(x: mx.array, axis: Any = None, keepdims: bool = False, **kw: Any) -> mx.array:
    """`mx.logsumexp` over the last axis (what sampling asks for), else MLX's own."""
    last = axis in (-1, x.ndim - 1) or (axis is None and x.ndim == 1)
    if kw or not last or not _eligible(x, MIN_LOGSUMEXP):
        return mx.logsumexp(x, axis=axis, keepdims=keepdims, **kw)
    a = _np(x)
    m = a.max(axis=-1, keepdims=True)
    s = np.exp(a - m).sum(axis=-1, keepdims=True, dtype=np.float32)
    out = m + np.log(s)
    if axis is None:
        return mx.array(out.reshape(()) if not keepdims else out)
    return mx.array(out if keepdims else out[..., 0])


def _masked(scores: np.ndarray, mask: Any, q_len: int) -> np.ndarray:
    if mask is None:
        return scores
    if isinstance(mask, str):  # "causal": queries are the last q_len of the keys
        k_len = scores.shape[-1]
        keep = np.arange(k_len)[None] <= np.arange(k_len - q_len, k_len)[:, None]
        return np.where(keep, scores, _NEG)
    m = _np(mask)
    if m.dtype == np.bool_:
        return np.where(m, scores, _NEG)
    return scores + m


def scaled_dot_product_attention(queries: mx.array, keys: mx.array, values: mx.array,
                                 cache: Any, scale: float, mask: Any,
                                 sinks: Any = None) -> mx.array:
    """mlx-lm's `scaled_dot_product_attention`: matmuls in MLX, the softmax in numpy."""
    # Quantized caches hand over (codes, scales, biases) tuples: MLX's own path.
    if (sinks is not None or hasattr(cache, "bits") or not isinstance(keys, mx.array)
            or keys.dtype != mx.float32 or not _eligible(queries, 1)
            or queries.size // queries.shape[-1] * keys.shape[2] < MIN_SOFTMAX):
        return _installed["sdpa"](queries, keys, values, cache=cache, scale=scale,
                                  mask=mask, sinks=sinks)
    b, h, q_len, d = queries.shape
    kv_heads, k_len = keys.shape[1], keys.shape[2]
    rep = h // kv_heads
    # Grouped heads: query head i reads kv head i // rep, as MLX's fast kernel does.
    q = (queries * scale).reshape(b, kv_heads, rep * q_len, d)
    scores = _np(q @ keys.swapaxes(-1, -2)).reshape(b, h, q_len, k_len)
    scores = _masked(scores, mask, q_len)
    scores = scores - scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    probs = mx.array(scores.reshape(b, kv_heads, rep * q_len, k_len))
    return (probs @ values).reshape(b, h, q_len, values.shape[-1])


def install(model: nn.Module) -> bool:
    """On CPU with float32 weights, route the three steps above through numpy.

    `gelu_approx` is replaced in `mlx.nn` (models look it up at call time), attention in
    the model's own module, `logsumexp` in mlx-lm's generate module (through
    step_logprobs.py's shim). Process-wide and idempotent; `uninstall` restores MLX's.
    """
    if mx.default_device() != mx.cpu or _weights_dtype(model) != mx.float32:
        return False
    if _installed:
        return True
    step_logprobs.install()
    step_logprobs.use(logsumexp)
    nn.gelu_approx = gelu_approx
    _installed["gelu"] = True
    mod = sys.modules.get(type(language_model(model)).__module__)
    if mod is not None and callable(getattr(mod, "scaled_dot_product_attention", None)):
        _installed["sdpa"] = mod.scaled_dot_product_attention
        _installed["sdpa_mod"] = mod
        mod.scaled_dot_product_attention = scaled_dot_product_attention
    log.info("CPU: gelu, attention softmax and logsumexp through numpy's SIMD loops")
    return True


def uninstall() -> None:
    if not _installed:
        return
    step_logprobs.use(None)
    nn.gelu_approx = _mlx_gelu_approx
    if "sdpa_mod" in _installed:
        _installed["sdpa_mod"].scaled_dot_product_attention = _installed["sdpa"]
    _installed.clear()


def _weights_dtype(model: nn.Module) -> Any:
    from mlx.utils import tree_flatten

    for _, p in tree_flatten(model.parameters()):
        return p.dtype
    return None
