"""Small statistics helpers (no numpy needed in the client path)."""

from __future__ import annotations

from typing import Iterable


def pct(values: Iterable[float | None], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None if empty."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    if len(xs) == 1:
        return float(xs[0])
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (k - lo))


def median(values: Iterable[float | None]) -> float | None:
    return pct(values, 50)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b
