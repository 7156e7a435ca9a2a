"""Threads: the GIL is released during a statistic, results do not depend on the thread count,
and the thread count follows ``set_num_threads`` and ``TUNED_LENS_NUM_THREADS``.

No timing asserts: the GIL test only checks that two windows overlap, under a switch interval so
long that a thread holding the GIL is never pre-empted while the test runs (so the windows can
only overlap when the statistic really lets go of the GIL).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from _stats_inputs import make_inputs, random_logits
from tuned_lens import lens_stats as ls


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = ls.get_num_threads()
    yield
    ls.set_num_threads(before)


# ------------------------------------------------------------------------------------------
# The GIL is released


def _gil_inputs() -> dict[str, Any]:
    data = make_inputs((4, 16), 50304, seed=1)  # 64 rows, 12.9 MB per array
    return {
        "lp": data.lp,
        "lq": data.lq,
        "logits": data.logits,
        "targets": data.targets,
        # One out= buffer per thread: a buffer being written cannot be lent twice.
        "outs": [np.empty_like(data.lp), np.empty_like(data.lp)],
    }


GIL_CALLS: dict[str, Callable[[dict[str, Any], int], object]] = {
    "log_softmax": lambda d, i: ls.log_softmax(d["logits"], out=d["outs"][i]),
    "entropy": lambda d, i: ls.entropy(d["lp"]),
    "entropy_from_logits": lambda d, i: ls.entropy_from_logits(d["logits"]),
    "max_probability": lambda d, i: ls.max_probability(d["lp"]),
    "target_rank": lambda d, i: ls.target_rank(d["lp"], d["targets"]),
    "kl_divergence": lambda d, i: ls.kl_divergence(d["lp"], d["lq"]),
    "forward_kl": lambda d, i: ls.forward_kl(d["lp"], d["lq"][0]),
    "js_divergence": lambda d, i: ls.js_divergence(d["lp"], d["lq"]),
    "total_variation": lambda d, i: ls.total_variation(d["lp"], d["lq"]),
    "top_k": lambda d, i: ls.top_k(d["lp"], 10),
    "top_k_delta": lambda d, i: ls.top_k_delta(d["lp"], d["lq"], 10),
    "marginal_sums": lambda d, i: ls.marginal_sums(d["lp"]),
}


def _windows(call: Callable[[int], object], repeats: int) -> list[tuple[float, float]]:
    """Run `call(thread_index)` `repeats` times in each of two threads; return their windows."""
    barrier = threading.Barrier(2)
    windows: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            start = time.monotonic()
            for _ in range(repeats):
                call(index)
            windows.append((start, time.monotonic()))
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    old_interval = sys.getswitchinterval()
    # A thread that holds the GIL keeps it: no forced switch for a minute.
    sys.setswitchinterval(60.0)
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old_interval)
    if errors:
        raise errors[0]
    return windows


@pytest.mark.parametrize("name", sorted(GIL_CALLS))
def test_gil_is_released(name: str, restore_threads: None) -> None:
    ls.set_num_threads(1)
    data = _gil_inputs()
    call = GIL_CALLS[name]
    call(data, 0)  # warm-up: thread pool and buffers exist before the measurement
    # The first thread enters the statistic holding the GIL; the second can only start its own
    # window while the first is inside a call if that call released the GIL. Retry a few times
    # with more repeats in case the first thread's call ended before the OS woke the second.
    for repeats in (4, 16, 64):
        (a0, a1), (b0, b1) = _windows(lambda i: call(data, i), repeats)
        if max(a0, b0) < min(a1, b1):
            return
    pytest.fail(f"{name}: the two threads' windows never overlapped: is the GIL held?")


# ------------------------------------------------------------------------------------------
# Bit-identical results for any thread count


def _thread_inputs() -> dict[str, Any]:
    rng = np.random.default_rng(5)
    small = make_inputs((7, 31), 4099, seed=2)  # 217 rows, odd V
    big = make_inputs((2, 3, 4), 50304, seed=3)
    logits = random_logits(rng, (5, 40, 1031))
    return {"small": small, "big": big, "logits": logits}


def _all_results(d: dict[str, Any]) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for data in (d["small"], d["big"]):
        lp, lq, t = data.lp, data.lq, data.targets
        out += [
            ls.log_softmax(data.logits),
            ls.logsumexp(data.logits),
            ls.entropy(lp),
            ls.entropy_from_logits(data.logits),
            *ls.max_probability(lp),
            ls.cross_entropy(lp, t),
            ls.target_rank(lp, t),
            ls.kl_divergence(lp, lq),
            ls.forward_kl(lp, lq[..., 0, :, :]),
            ls.js_divergence(lp, lq),
            ls.symmetric_kl(lp, lq),
            ls.total_variation(lp, lq),
            ls.max_abs_diff(lp, lq),
            *ls.top_k(lp, 10),
            *ls.top_k_delta(lp, lq, 10),
            *ls.marginal_sums(lp)[:2],
        ]
    out.append(ls.entropy_from_logits(d["logits"]))
    return [np.asarray(a) for a in out]


def test_results_are_bit_identical_for_any_thread_count(restore_threads: None) -> None:
    inputs = _thread_inputs()
    ls.set_num_threads(1)
    reference = _all_results(inputs)
    for n in (2, 3):
        ls.set_num_threads(n)
        assert ls.get_num_threads() == n
        for i, (got, want) in enumerate(zip(_all_results(inputs), reference)):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes(), f"result {i} differs with {n} threads"


# ------------------------------------------------------------------------------------------
# Thread-count settings


def test_set_and_get_num_threads(restore_threads: None) -> None:
    ls.set_num_threads(3)
    assert ls.get_num_threads() == 3
    ls.set_num_threads(1)
    assert ls.get_num_threads() == 1
    ls.set_num_threads(None)
    assert ls.get_num_threads() >= 1


def _run_python(code: str, env_value: str | None, timeout: float = 120) -> str:
    env = dict(os.environ)
    env.pop("TUNED_LENS_NUM_THREADS", None)
    if env_value is not None:
        env["TUNED_LENS_NUM_THREADS"] = env_value
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_env_var_sets_the_default_thread_count() -> None:
    code = """
        from tuned_lens import lens_stats as ls
        import numpy as np
        first = ls.get_num_threads()
        ls.entropy(np.zeros((8, 16), np.float32) - np.log(16))
        ls.set_num_threads(1)
        one = ls.get_num_threads()
        ls.set_num_threads(None)
        print(first, one, ls.get_num_threads())
    """
    assert _run_python(code, "3").split() == ["3", "1", "3"]
    first, one, back = (int(v) for v in _run_python(code, None).split())
    assert first >= 1 and one == 1 and back == first


# ------------------------------------------------------------------------------------------
# The thread count is bounded (4 × the logical CPUs, at least 64)


LIMIT = re.compile(r"the limit is (\d+) threads \(4 × the (\d+) logical CPUs, at least 64\)")


@pytest.mark.parametrize("extra", [1, 100_000, 2**70])
def test_set_num_threads_refuses_more_than_the_limit(extra: int, restore_threads: None) -> None:
    from tuned_lens.lens_stats import _native

    limit = _native.MAX_THREADS
    ls.set_num_threads(2)
    with pytest.raises(ls.LensStatsError, match=r"^n: \d+ threads is too many: ") as info:
        ls.set_num_threads(limit + extra)
    named = LIMIT.search(str(info.value))
    assert named is not None, str(info.value)
    assert int(named[1]) == limit == max(64, 4 * int(named[2]))
    assert ls.get_num_threads() == 2  # refused before any thread was started
    ls.set_num_threads(limit)
    assert ls.get_num_threads() == limit


def _env_threads(value: str) -> tuple[int, int, list[str]]:
    code = """
        import json, warnings
        import numpy as np
        from tuned_lens import lens_stats as ls
        from tuned_lens.lens_stats import _native
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ls.entropy(np.zeros((64, 1024), np.float32) - np.log(1024))
            threads = ls.get_num_threads()
        print(json.dumps([threads, _native.MAX_THREADS, [str(w.message) for w in caught]]))
    """
    threads, limit, messages = json.loads(_run_python(code, value, timeout=60))
    return threads, limit, messages


def test_env_var_above_the_limit_is_clamped_with_a_warning() -> None:
    threads, limit, messages = _env_threads("5000")
    assert threads == limit
    assert len(messages) == 1, messages
    assert messages[0].startswith("TUNED_LENS_NUM_THREADS=5000 is too many: the limit is ")
    assert messages[0].endswith(f"; using {limit}")


@pytest.mark.parametrize("value", ["abc", "0", "-3"])
def test_env_var_that_is_not_a_positive_integer_is_ignored_with_a_warning(value: str) -> None:
    threads, _, messages = _env_threads(value)
    assert messages == [
        f'TUNED_LENS_NUM_THREADS="{value}" is not a positive integer; using the {threads} '
        "logical CPUs"
    ]
