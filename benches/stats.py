"""What the benchmarks share: timing a call repeatedly, and percentiles."""

from __future__ import annotations

import time
from collections.abc import Callable


def pct(xs: list[float], p: float) -> float:
    """The `p` quantile (0..1) of `xs`, nearest rank."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def timed(fn: Callable[[], object], n: int) -> list[float]:
    """Seconds each of `n` calls of `fn` took."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out
