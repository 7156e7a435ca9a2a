"""Peak extra memory of one lens_stats call, measured in a fresh process (run by run_all.py).

Usage: ``python benches/_peak_memory.py CASE L,T,V DTYPE THREADS`` prints one JSON object.

Method (Linux):
1. Build the inputs (every layer the same random slab: values do not matter here), make one
   small warm-up call of the same statistic so that the thread pool and its per-thread buffers
   exist, collect garbage and return free heap pages to the system (glibc ``malloc_trim``), so
   that memory the call allocates has to be faulted in afresh and shows in the RSS.
2. Read VmRSS, then reset the peak-RSS counter (write "5" to /proc/self/clear_refs) and start
   tracemalloc.
3. Make one call at full size; read VmHWM (the resident high-water mark) and tracemalloc's peak.

``rss_extra`` = VmHWM - VmRSS before the call: every page the call made resident, whoever
allocated it (Rust buffers, numpy outputs, thread stacks). ``traced_peak`` = tracemalloc's peak
(numpy's allocations, including outputs, whether or not their pages were touched). The suite
reports the larger of the two. A fresh process per case keeps freed memory of earlier cases
from hiding new allocations. Where clear_refs cannot be written, the high-water mark from
before the call is subtracted instead (``hwm_reset`` false; then an earlier transient peak can
hide part of the call's own).
"""

from __future__ import annotations

import ctypes
import gc
import json
import re
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _inputs import make_float32, to_bfloat16  # noqa: E402
from bench_stats import CASES_BY_NAME, Workspace  # noqa: E402
from tuned_lens import lens_stats as ls  # noqa: E402


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _return_free_heap_to_the_system() -> None:
    """glibc keeps freed heap pages resident; give them back so that reusing them shows up."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_high_water_mark() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(case_name: str, shape: tuple[int, int, int], dtype: str, threads: int) -> dict:
    case = CASES_BY_NAME[case_name]
    ls.set_num_threads(threads)
    inputs = make_float32(shape, tiled=True)
    if dtype == "bfloat16":
        inputs = to_bfloat16(inputs)
    work = Workspace(inputs)
    if case.name == "log_softmax":
        work.out  # noqa: B018 - the caller's buffer exists before the call, as in real use
    small = Workspace(make_float32((2, 4, shape[-1]), seed=1))
    if dtype == "bfloat16":
        small = Workspace(to_bfloat16(small.inputs))
    case.ours(small)
    del small
    gc.collect()
    _return_free_heap_to_the_system()
    rss_before = _status_kib("VmRSS")
    hwm_before = _status_kib("VmHWM")
    reset = _reset_high_water_mark()
    tracemalloc.start()
    result = case.ours(work)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm_after = _status_kib("VmHWM")
    del result
    baseline = rss_before if reset else max(rss_before, hwm_before)
    return {
        "case": case_name,
        "shape": list(shape),
        "dtype": dtype,
        "input_bytes": case.input_bytes(inputs),
        "rss_extra": max(0, hwm_after - baseline) * 1024,
        "traced_peak": int(traced_peak),
        "hwm_reset": reset,
    }


def main() -> None:
    case_name, shape_text, dtype, threads = sys.argv[1:5]
    shape = tuple(int(v) for v in shape_text.split(","))
    print(json.dumps(measure(case_name, shape, dtype, int(threads))))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
