"""One way to time a call in the benchmarks: the median of repeated runs after a warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(run: Callable[[], object], runs: int, warm_up: int = 1) -> float:
    """Median wall-clock milliseconds of `run()` over `runs` calls, after `warm_up` untimed ones
    (first calls allocate and pick kernels)."""
    for _ in range(warm_up):
        run()
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)
