"""The vocabulary-wide log-softmax of mlx-lm's batched step, only when a row needs it.

mlx-lm's `GenerationBatch._step` turns every row's logits into log-probabilities
(`logits - logsumexp(logits)`) before sampling. Greedy argmax and our numpy sampler
(np_sampling.py, which works relative to each row's maximum) draw the same token either
way, and only requests that ask for `logprobs` read the values. On Gemma 3's 262,144-token
vocabulary that normalization is a sync plus an exp over every logit: ~7 ms of a batch-8
CPU decode step even through numpy (cpu_ops.py), measured median 145 -> 133 ms a step with
it skipped (8 rows, 4 alternated reps, identical greedy text).

mlx-lm looks `logsumexp` up on its module's `mx` at call time, so that name is swapped for
a shim: inside `skipping(True)` (the engine's step when no running row needs the values) it
returns 0 and the "log-probabilities" are the raw logits; otherwise the real reduction
(numpy's on CPU when cpu_ops installs it, else MLX's). The flag is per thread: each engine
steps its generator on its own thread.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any

import mlx.core as mx

from .thread_flag import ThreadFlag

_skip = ThreadFlag()
_impl: dict[str, Callable[..., mx.array]] = {"logsumexp": mx.logsumexp}
_saved: dict[str, Any] = {}


def logsumexp(x: mx.array, axis: Any = None, keepdims: bool = False, **kw: Any) -> mx.array:
    """What mlx-lm's generate module calls as `mx.logsumexp`."""
    if _skip and axis in (-1, x.ndim - 1) and keepdims and not kw:
        return mx.array(0, dtype=x.dtype)  # broadcasts: logits - 0 are the logits
    return _impl["logsumexp"](x, axis=axis, keepdims=keepdims, **kw)


class _GenerateCore(types.ModuleType):
    """`mlx.core` as mlx-lm's generate module sees it, with our `logsumexp`."""

    logsumexp = staticmethod(logsumexp)

    def __getattr__(self, name: str) -> Any:
        return getattr(mx, name)


def install() -> None:
    """Swap mlx-lm's generate-module `mx` for the shim (idempotent, process-wide)."""
    gen_mod = importlib.import_module("mlx_lm.generate")  # the package re-exports a function by that name
    if not isinstance(gen_mod.mx, _GenerateCore):
        _saved["mx"] = gen_mod.mx
        gen_mod.mx = _GenerateCore("mlx.core")


def uninstall() -> None:
    if "mx" in _saved:
        sys.modules["mlx_lm.generate"].mx = _saved.pop("mx")


def use(fn: Callable[..., mx.array] | None) -> None:
    """The reduction used when the step needs it (None: MLX's own)."""
    _impl["logsumexp"] = fn or mx.logsumexp


# Within `skipping(True)`: this thread's batched steps leave logits unnormalized.
skipping = _skip.set
