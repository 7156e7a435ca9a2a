"""This machine's memory read bandwidth, measured in the same run as the statistics (and a
plain copy's, the ceiling of a call that writes as much as it reads).

Method: stream a 1.5 GiB buffer (several times any last-level cache reported by lscpu here,
480 MiB) with three read-only reductions, each with the suite's thread count, and keep the best
of several repeats of the best method:

* ``bitwise_or.reduce`` over a uint64 view, the buffer split into one chunk per thread, each
  chunk reduced in its own Python thread (numpy releases the GIL; integer OR vectorises fully,
  so the loop is not compute-bound);
* ``np.max`` over float32 chunks, threaded the same way;
* ``torch.amax`` with ``torch.set_num_threads(threads)``.

The buffer is written once before timing, so no page is touched for the first time while the
clock runs. "Best" is the honest choice for a ceiling: on a shared machine every disturbance
only makes a run slower.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import torch

DEFAULT_BYTES = 3 * 2**29  # 1.5 GiB


def _threaded(jobs: list[tuple[np.ndarray, ...]], op: Callable[..., object]) -> Callable[[], None]:
    """A callable that runs ``op(*job)`` for every job, each in its own Python thread."""

    def run() -> None:
        workers = [threading.Thread(target=op, args=job) for job in jobs]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    return run


def measure_read_bandwidth(
    *, threads: int, n_bytes: int = DEFAULT_BYTES, repeats: int = 5
) -> dict[str, object]:
    """Best read bandwidth in GB/s (1e9 bytes/s) over methods and repeats.

    Returns:
        {"gbps": best, "method": its name, "per_method": {name: best GB/s}, "bytes": n_bytes}.
    """
    buffer = np.empty(n_bytes // 8, dtype=np.uint64)
    buffer.fill(0x3F8000003F800000)  # 1.0f in every float32 lane: valid floats for np.max
    as_float = buffer.view(np.float32)
    u64_chunks = np.array_split(buffer, threads)
    f32_chunks = np.array_split(as_float, threads)
    tensor = torch.from_numpy(as_float)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    methods: dict[str, Callable[[], object]] = {
        "numpy bitwise_or.reduce (threads)": _threaded(
            [(c,) for c in u64_chunks], np.bitwise_or.reduce
        ),
        "numpy max (threads)": _threaded([(c,) for c in f32_chunks], np.max),
        "torch.amax": lambda: tensor.amax(),
    }
    per_method: dict[str, float] = {}
    try:
        for name, run in methods.items():
            run()  # warm-up
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - start)
            per_method[name] = n_bytes / best / 1e9
    finally:
        torch.set_num_threads(torch_threads)
    method = max(per_method, key=per_method.__getitem__)
    return {
        "gbps": per_method[method],
        "method": method,
        "per_method": per_method,
        "bytes": n_bytes,
    }


def plain_read_seconds(arrays: list[np.ndarray | torch.Tensor], *, threads: int) -> float:
    """Seconds of one plain read of ``arrays`` now: the faster of the threaded integer OR and
    ``torch.amax`` over integer views of the same memory (no copy). Timed right before a
    statistic reads the same bytes, it is that statistic's ceiling at that moment (a shared
    machine's bandwidth drifts by 2× within minutes)."""
    flat = [
        (a if isinstance(a, np.ndarray) else a.view(torch.int16).numpy()).reshape(-1)
        for a in arrays
    ]
    words = [a.view(np.uint64) for a in flat]
    chunks = [c for w in words for c in np.array_split(w, threads)]
    tensors = [torch.from_numpy(w.view(np.int64)) for w in words]
    reads = [
        _threaded([(c,) for c in chunks], np.bitwise_or.reduce),
        lambda: [t.amax() for t in tensors],
    ]
    return _fastest_once(reads, threads=threads)


def plain_copy_seconds(src: torch.Tensor, dst: torch.Tensor, *, threads: int) -> float:
    """Seconds of one plain copy of ``src`` into ``dst`` now (float32 tensors of one shape):
    the faster of ``Tensor.copy_`` with ``threads`` torch threads and ``np.copyto`` on one
    chunk per Python thread (glibc's ``memcpy``, streaming stores for large chunks). The
    ceiling of a call that reads an array and writes one as large (``log_softmax(out=)``):
    its read, its write and the write's read-for-ownership or streaming store, at that
    moment."""
    chunks = list(
        zip(
            np.array_split(dst.numpy().reshape(-1), threads),
            np.array_split(src.numpy().reshape(-1), threads),
            strict=True,
        )
    )
    return _fastest_once([lambda: dst.copy_(src), _threaded(chunks, np.copyto)], threads=threads)


def _fastest_once(runs: list[Callable[[], object]], *, threads: int) -> float:
    """Seconds of the fastest of one call of each of ``runs``, torch on ``threads`` threads."""
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        for run in runs:
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(torch_threads)
    return min(times)


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure_read_bandwidth(threads=int(sys.argv[1]) if len(sys.argv) > 1 else 2)))
