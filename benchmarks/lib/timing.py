"""Shared timing helper of the benchmark scripts: best-of-N wall time with an optional device sync."""
from __future__ import annotations

import time
from typing import Callable


def best_time(run: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None,
              warmup: bool = True) -> float:
    """Fastest wall time of ``repeats`` calls of ``run`` in seconds, after one untimed call when ``warmup``."""
    if warmup:
        run()
        sync()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)
