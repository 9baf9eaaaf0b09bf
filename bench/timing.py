"""Wall-clock timing shared by the bench scripts (imported as causalwan.bench.timing)."""
from __future__ import annotations

import time


def timed(fn) -> tuple[float, object]:
    """One call of fn: (milliseconds, its result)."""
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1e3, out


def repeated(fn, repeat: int) -> list[float]:
    """Milliseconds of `repeat` calls of fn after one warm-up call."""
    fn()
    return [timed(fn)[0] for _ in range(repeat)]
