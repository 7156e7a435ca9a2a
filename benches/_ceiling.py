"""A statistic's compute ceiling: its throughput on inputs that sit in cache, same threads.

The bandwidth share of a statistic is bounded by two things: the memory system (the plain read
it is set against) and its own arithmetic. Timing the same call on a few rows that stay in the
caches between calls measures the second in the same run, so a MISS in the table can be read
as "the kernel is slower than memory here" (ceiling below the target) or "memory and
arithmetic overlap badly" (ceiling above it, streaming share below).

Method: the first ``rows`` rows of the run's own inputs (one layer, ``rows`` positions: 16 ×
50,304 float32 is 3.2 MB per array, inside the 32 MiB L3 of the project's machines), copied to
contiguous arrays, timed on one thread (the call runs on the calling thread: no hand-off to the
pool's helpers, whose wake-up would be a sizeable part of a 0.2 ms call), one warm-up call,
then the best of ``repeats`` calls; times the thread count (the cores compute independently).
Best, not median: interference only slows a call down.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from _inputs import BenchInputs
from tuned_lens import lens_stats as ls

ROWS = 16
REPEATS = 30


def _head(x: np.ndarray | torch.Tensor, rows: int) -> np.ndarray | torch.Tensor:
    part = x[:1, :rows]
    return np.ascontiguousarray(part) if isinstance(x, np.ndarray) else part.contiguous()


def small_inputs(inputs: BenchInputs, rows: int = ROWS) -> BenchInputs:
    """The first ``rows`` positions of the first layer, as a (1, rows, V) copy."""
    return BenchInputs(
        _head(inputs.lp, rows),
        _head(inputs.lq, rows),
        np.ascontiguousarray(inputs.targets[:rows]),
        inputs.dtype,
    )


def in_cache_gbps(call: Any, n_bytes: int, *, threads: int, repeats: int = REPEATS) -> float:
    """GB/s of input read by ``call()`` (which reads ``n_bytes``) on one thread, best of
    ``repeats`` calls after one warm-up, times ``threads``."""
    before = ls.get_num_threads()
    ls.set_num_threads(1)
    try:
        call()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
    finally:
        ls.set_num_threads(before)
    return threads * n_bytes / best / 1e9
